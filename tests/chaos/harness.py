"""Fault harness: steady incident load through the five real service processes while faults are injected.

A scenario runs an open-loop reporter (N reports/s) and a responder that acknowledges most handoffs
(some never, so general report deadlines breach under the short policy), resolves, verifies and gives
feedback for a subset. Every HTTP operation and every injected fault goes to a JSON-lines history under
test-artifacts/chaos/<scenario>.jsonl; after a drain period every topic is read from offset zero and
`tests.chaos.invariants.check` judges the history against the events.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from contracts.deadline_policy import DEFAULT_POLICY
from contracts.reference import demo_city
from contracts.topics import (
    CLASSIFICATION_DECISIONS,
    CLOSURE_OUTCOMES,
    INTAKE_INCIDENTS,
    ROUTING_HANDOFFS,
    SLA_DEADLINES,
)
from infra.local import ServiceProcess, create_topics_sync, free_port
from tests.chaos import invariants
from tests.e2e.stack import Stack, read_topic
from tests.support import mint_token

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "chaos"
CHAOS_SERVICES = ("intake", "classification", "routing", "sla_timer", "closure")
TOPICS = (INTAKE_INCIDENTS, CLASSIFICATION_DECISIONS, ROUTING_HANDOFFS, SLA_DEADLINES, CLOSURE_OUTCOMES)
SHORT_GENERAL_REPORT_SECONDS = 4.0
CITY = demo_city()
DESCRIPTIONS = (
    "楼上邻居装修噪音太大，影响休息",  # general: breaches under the short policy unless acknowledged
    "小区门口垃圾堆放多日无人清理",
    "楼下有人打架，有人流血，请民警快来",  # urgent: 15 minutes, never breaches within a run
)


@dataclass(frozen=True)
class Profile:
    """How hard and how long a scenario pushes."""

    name: str
    load_seconds: float
    reports_per_second: float
    drain_seconds: float
    repeats: int


PROFILES = {
    "short": Profile("short", load_seconds=20, reports_per_second=1.5, drain_seconds=8, repeats=1),
    "long": Profile("long", load_seconds=40, reports_per_second=3, drain_seconds=10, repeats=2),
}


def current_profile() -> Profile:
    """The profile named by CHAOS_PROFILE (short by default)."""
    return PROFILES[os.environ.get("CHAOS_PROFILE", "short")]


def fate_of(incident_id: str) -> str:
    """What the responder does with an incident, fixed by its id: ignore, acknowledge or close."""
    bucket = hashlib.sha256(incident_id.encode()).digest()[0] % 10
    return "ignore" if bucket < 2 else "acknowledge" if bucket < 5 else "close"


class ChaosStack(Stack):
    """The five services (no console) as processes; `unsafe` names services run through a test module."""

    unsafe: dict[str, str]
    # Extra environment per service (test-only switches of the `unsafe` entry points).
    extra_env: dict[str, dict[str, str]]
    # Tokens by user: minting one resolves the user against the reference data, which would
    # otherwise cost the driver's event loop more than the calls themselves under load.
    _tokens: dict[str, str]

    def token(self, user: str, ttl_seconds: int = 3600) -> str:
        """A token for `user`, minted once per scenario (scenarios are far shorter than its TTL)."""
        if not hasattr(self, "_tokens"):
            self._tokens = {}
        if user not in self._tokens:
            self._tokens[user] = mint_token(user, secret=self.secret, ttl_seconds=ttl_seconds, city=CITY)
        return self._tokens[user]

    def start(self) -> ChaosStack:
        """Start each service and wait until all are healthy."""
        for name in CHAOS_SERVICES:
            self.processes[name] = self._process(name, name).start()
        for proc in self.processes.values():
            proc.wait_healthy(timeout=90)
        return self

    def _process(self, name: str, key: str) -> ServiceProcess:
        module = self.unsafe.get(name)
        proc = ServiceProcess(name, {}, free_port(), self.log_dir / f"{key}.log", module=module)
        proc.env = {**self.env_for(name), f"GW_{name.upper()}_HTTP_PORT": str(proc.port), **self.extra_env.get(name, {})}
        if module:
            proc.env["GW_CHAOS_UNSAFE_SERVICE"] = name
        return proc

    def add_replica(self, name: str, *, unsafe: bool = True) -> str:
        """Start one more process of a service (same database, same consumer groups); return its key.

        With `unsafe=False` the replica runs the real service even where the stack runs a test
        entry point for it (e.g. one slow replica and one normal)."""
        n = 2
        while f"{name}#{n}" in self.processes:
            n += 1
        key = f"{name}#{n}"
        proc = self._process(name, key)
        if not unsafe:
            proc.module = f"services.{name}"
            proc.env = {k: v for k, v in proc.env.items() if not k.startswith("GW_CHAOS_")}
        self.processes[key] = proc.start()
        self.processes[key].wait_healthy(timeout=120)
        return key

    def terminate(self, name: str) -> None:
        """SIGTERM a service and wait for its graceful exit."""
        self.processes[name].terminate()

    def health(self, name: str) -> tuple[int | None, dict[str, Any]]:
        """A service's readiness answer: status and body (None, {} when it did not answer)."""
        try:
            response = httpx.get(self.url(name) + "/health", timeout=5)
        except httpx.HTTPError as exc:
            return None, {"error": type(exc).__name__}
        return response.status_code, response.json()

    def metric(self, name: str, metric: str) -> float | None:
        """One unlabelled sample of a service's Prometheus metrics (None when unavailable)."""
        try:
            text = httpx.get(self.url(name) + "/metrics", timeout=5).text
        except httpx.HTTPError:
            return None
        for line in text.splitlines():
            if line.startswith(metric + " "):
                return float(line.split()[1])
        return None

    def outbox_backlog(self, name: str) -> float | None:
        """Outbox rows the service has committed but not published yet (its relay's gauge)."""
        return self.metric(name, f"gridwhistle_{name}_outbox_backlog_events")


def start_stack(
    bootstrap: str,
    postgres_server: Any,
    work: Path,
    *,
    unsafe: dict[str, str] | None = None,
    env: dict[str, dict[str, str]] | None = None,
    general_report_seconds: float = SHORT_GENERAL_REPORT_SECONDS,
) -> ChaosStack:
    """A fresh topic prefix, five fresh databases and the short general report policy."""
    prefix = f"chaos{uuid.uuid4().hex[:8]}."
    create_topics_sync(bootstrap, prefix=prefix)
    policy = DEFAULT_POLICY.model_dump(mode="json")
    policy["version"] = "chaos-short-general"
    policy["general"]["report"] = general_report_seconds
    policy_file = work / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy), encoding="utf-8")
    databases = {n: postgres_server.create_database(f"chaos_{n}_{uuid.uuid4().hex[:6]}") for n in CHAOS_SERVICES}
    stack = ChaosStack(bootstrap, prefix, databases, work / "logs", policy_file)
    stack.unsafe = unsafe or {}
    stack.extra_env = env or {}
    try:
        return stack.start()
    except Exception:
        print(stack.logs())
        stack.stop()
        raise


@dataclass
class Fault:
    """One fault at `at` seconds into the load: `inject` runs in a thread (it may block while restarting)."""

    at: float
    name: str
    inject: Callable[[], None]


@dataclass
class History:
    """Append-only record of operations and faults, mirrored line by line to a JSON-lines file."""

    path: Path
    started: float = field(default_factory=time.monotonic)
    records: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")

    def record(self, **entry: Any) -> None:
        """Append one entry stamped with wall time and seconds since start."""
        entry = {"t": round(time.monotonic() - self.started, 3), "at": datetime.now(UTC).isoformat(), **entry}
        self.records.append(entry)
        self._file.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()


@dataclass
class Outcome:
    """A finished scenario: its verdict and what it did."""

    scenario: str
    verdict: invariants.Verdict
    operations: int
    faults: list[str]
    history_path: Path
    events: list[invariants.Event] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for logs and the README table."""
        v = self.verdict
        return (
            f"{self.scenario}: {self.operations} operations, {v.incidents} incidents, {v.events} events "
            f"({v.duplicate_copies} duplicate copies, {v.withdrawn_breaches} breaches withdrawn), "
            f"{v.closed_incidents} closed and {v.open_incidents} legitimately open, "
            f"faults [{', '.join(self.faults)}], {len(v.violations)} invariant violations"
        )


class Driver:
    """The reporter and the responder, talking HTTP to the stack and writing the history."""

    def __init__(
        self, stack: ChaosStack, history: History, client: httpx.AsyncClient, fate: Callable[[str], str] = fate_of
    ) -> None:
        self.stack = stack
        self.history = history
        self.client = client
        self.fate = fate
        self.members: dict[str, str] = {}
        self.tasks: list[asyncio.Task] = []

    async def call(self, op: str, service: str, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        """One HTTP request, recorded with its status (None when the service did not answer)."""
        ids = {k: kwargs.pop(k) for k in ("incident_id", "handoff_id") if k in kwargs}
        # Signed in as the actor the command names (reads as an admin), with a fresh token.
        kwargs.setdefault("headers", self.stack.as_user((kwargs.get("json") or {}).get("actor_id", "admin")))
        try:
            response = await self.client.request(method, self.stack.url(service) + path, **kwargs)
        except httpx.HTTPError as exc:
            if op != "read":
                self.history.record(op=op, status=None, error=type(exc).__name__, **ids)
            return None
        if op != "read":
            self.history.record(op=op, status=response.status_code, **ids)
        return response

    async def retrying(self, op: str, service: str, path: str, body: dict, *, attempts: int = 8, **ids: Any) -> bool:
        """POST until the service answers (each attempt recorded); True on 2xx."""
        for _ in range(attempts):
            response = await self.call(op, service, "POST", path, json=body, **ids)
            if response is not None and response.status_code < 500:
                return response.is_success
            await asyncio.sleep(1.0)
        return False

    async def report(self, description: str) -> None:
        """Report one incident (retrying with the same Idempotency-Key), then respond to it."""
        grid = random.choice(CITY.grids)  # spread over grids so intake's duplicate detection stays out of the way
        body = {
            "grid_id": grid.id,
            "reporter_id": grid.grid_worker_ids[0],
            "description": description,
            "location": {"latitude": grid.latitude, "longitude": grid.longitude, "address": f"{grid.id}网格"},
        }
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        for _ in range(8):
            try:
                response = await self.client.post(
                    f"{self.stack.url('intake')}/api/v1/incidents", json=body,
                    headers={**headers, **self.stack.as_user(grid.grid_worker_ids[0])},
                )
            except httpx.HTTPError as exc:
                self.history.record(op="report", status=None, error=type(exc).__name__, key=headers["Idempotency-Key"])
                await asyncio.sleep(1.0)
                continue
            incident_id = response.json().get("incident_id") if response.status_code == 202 else None
            self.history.record(op="report", status=response.status_code, incident_id=incident_id,
                                key=headers["Idempotency-Key"])
            if response.status_code == 503:  # overloaded or its database unreachable: as a phone would, retry
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            if incident_id:
                await self.respond(incident_id, grid.grid_worker_ids[0])
            return

    async def handoffs(self, incident_id: str) -> list[dict]:
        """The incident's handoffs as routing sees them (empty while unknown or unreachable)."""
        response = await self.call("read", "routing", "GET", f"/api/v1/incidents/{incident_id}/handoffs")
        return response.json()["handoffs"] if response is not None and response.status_code == 200 else []

    async def member_of(self, unit_id: str) -> str | None:
        """A member of a unit, who may act for it."""
        if unit_id not in self.members:
            response = await self.call("read", "routing", "GET", f"/api/v1/units/{unit_id}")
            if response is None or response.status_code != 200:
                return None
            self.members[unit_id] = response.json()["members"][0]
        return self.members[unit_id]

    async def respond(self, incident_id: str, grid_worker: str, *, patience: float = 40.0) -> None:
        """Act on the incident according to its fate until done or out of patience."""
        fate = self.fate(incident_id)
        self.history.record(op="fate", fate=fate, incident_id=incident_id)
        if fate == "ignore":
            return
        deadline = time.monotonic() + patience
        done: set[tuple[str, str]] = set()
        while time.monotonic() < deadline:
            handoffs = await self.handoffs(incident_id)
            pending = False
            for handoff in handoffs:
                hid = handoff["handoff_id"]
                if handoff["state"] in ("released", "reassigned", "declined"):
                    continue
                actor = await self.member_of(handoff["unit_id"])
                if actor is None:
                    pending = True
                    continue
                if ("acknowledge", hid) not in done and handoff["state"] == "dispatched":
                    if await self.retrying("acknowledge", "routing", f"/api/v1/handoffs/{hid}/acknowledge",
                                           {"actor_id": actor}, incident_id=incident_id, handoff_id=hid):
                        done.add(("acknowledge", hid))
                if fate == "close" and ("resolve", hid) not in done and handoff["state"] != "resolved":
                    if await self.retrying("resolve", "routing", f"/api/v1/handoffs/{hid}/resolve",
                                           {"actor_id": actor, "disposition": "resolved", "note": "已处置"},
                                           incident_id=incident_id, handoff_id=hid):
                        done.add(("resolve", hid))
                    else:
                        pending = True
            if handoffs and not pending and fate == "acknowledge":
                return
            if handoffs and not pending and fate == "close" and await self.close(incident_id, grid_worker):
                return
            await asyncio.sleep(0.5)

    async def close(self, incident_id: str, grid_worker: str) -> bool:
        """Verify and give feedback once closure awaits them; True when feedback was accepted."""
        response = await self.call("read", "closure", "GET", f"/api/v1/incidents/{incident_id}")
        status = response.json().get("status") if response is not None and response.status_code == 200 else None
        if status == "awaiting_verification":
            await self.retrying("verify", "closure", f"/api/v1/incidents/{incident_id}/verification",
                                {"actor_id": grid_worker, "confirmed": True}, incident_id=incident_id)
        elif status == "awaiting_feedback":
            return await self.retrying("feedback", "closure", f"/api/v1/incidents/{incident_id}/feedback",
                                       {"actor_id": grid_worker, "satisfaction": "satisfied", "comment": "及时"},
                                       incident_id=incident_id)
        return status == "closed"

    async def load(self, profile: Profile, faults_done: asyncio.Event) -> None:
        """Open loop: a report every 1/rate seconds, regardless of how earlier ones fare, until load
        time is up and every fault has been injected and recovered from."""
        interval = 1.0 / profile.reports_per_second
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < profile.load_seconds or not faults_done.is_set():
            self.tasks.append(asyncio.create_task(self.report(DESCRIPTIONS[n % len(DESCRIPTIONS)])))
            n += 1
            await asyncio.sleep(max(0.0, started + n * interval - time.monotonic()))


Check = Callable[[list[invariants.Event]], list[str]]


async def run_scenario(
    scenario: str,
    stack: ChaosStack,
    faults: list[Fault],
    profile: Profile | None = None,
    *,
    checks: tuple[Check, ...] = (),
    notes: dict[str, Any] | None = None,
    fate: Callable[[str], str] = fate_of,
) -> Outcome:
    """Drive load while injecting faults, drain, read every topic from zero and check the invariants.

    `checks` are the scenario's own invariants over the events (their violations join the verdict);
    `notes` is what its faults observed (filled while they run), written to the verdict file;
    `fate` decides what the responder does with each incident.
    """
    profile = profile or current_profile()
    history = History(ARTIFACTS / f"{scenario}.jsonl")
    history.record(op="scenario", scenario=scenario, profile=profile.name, prefix=stack.prefix)
    faults_done = asyncio.Event()

    async def inject_all() -> None:
        for fault in sorted(faults, key=lambda f: f.at):
            await asyncio.sleep(max(0.0, history.started + fault.at - time.monotonic()))
            history.record(op="fault", fault=fault.name, phase="begin")
            await asyncio.to_thread(fault.inject)
            history.record(op="fault", fault=fault.name, phase="end")
        faults_done.set()

    try:
        async with httpx.AsyncClient(timeout=10) as client:
            driver = Driver(stack, history, client, fate)
            await asyncio.gather(driver.load(profile, faults_done), inject_all())
            await asyncio.gather(*driver.tasks)
        await asyncio.sleep(profile.drain_seconds)  # let due timers fire and relays drain
        checked_at = datetime.now(UTC)
        events: list[invariants.Event] = []
        for spec in TOPICS:
            read = await read_topic(stack.bootstrap, stack.prefix + spec.name)
            events += [invariants.event_from_envelope(envelope) for envelope in read]
        history.record(op="checked", events=len(events))
    finally:
        history.close()
    operations = [invariants.operation_from_record(r) for r in history.records if r["op"] in invariants.PROMISED_EVENT]
    verdict = invariants.check(operations, events, checked_at=checked_at)
    for extra in checks:
        verdict.violations += extra(events)
    outcome = Outcome(
        scenario, verdict, len(operations), [f.name for f in faults], history.path, events, notes if notes is not None else {}
    )
    (ARTIFACTS / f"{scenario}.verdict.json").write_text(
        json.dumps(
            {
                "summary": outcome.summary(),
                "violations": verdict.violations,
                "notes": outcome.notes,
                # Every event of each incident a violation names, in topic order, for the post-mortem.
                "evidence": evidence(verdict.violations, events),
            },
            ensure_ascii=False,
            indent=1,
            default=str,
        ),
        encoding="utf-8",
    )
    # Every event as read, so a verdict can be re-checked offline (`recheck`) after the topics are gone.
    with (ARTIFACTS / f"{scenario}.events.jsonl").open("w", encoding="utf-8") as out:
        for event in events:
            out.write(json.dumps({"id": event.id, "type": event.type, "subject": event.subject, "data": event.data},
                                 ensure_ascii=False, default=str) + "\n")
    print(outcome.summary())
    return outcome


def recheck(scenario: str) -> invariants.Verdict:
    """The invariants over a finished scenario's saved history and events (as of when it was checked)."""
    records = [json.loads(line) for line in (ARTIFACTS / f"{scenario}.jsonl").read_text(encoding="utf-8").splitlines()]
    checked_at = datetime.fromisoformat(next(r["at"] for r in records if r["op"] == "checked"))
    events = []
    for line in (ARTIFACTS / f"{scenario}.events.jsonl").read_text(encoding="utf-8").splitlines():
        raw = json.loads(line)
        data = {k: _revive(v) for k, v in raw["data"].items()}
        events.append(invariants.Event(raw["id"], raw["type"], raw["subject"], data))
    operations = [invariants.operation_from_record(r) for r in records if r["op"] in invariants.PROMISED_EVENT]
    return invariants.check(operations, events, checked_at=checked_at)


def _revive(value: Any) -> Any:
    """Timestamps back to datetimes (the checker compares them); everything else as saved."""
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] in " T":
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def evidence(violations: list[str], events: list[invariants.Event], limit: int = 10) -> dict[str, list[dict]]:
    """The events of the incidents that the first `limit` violations mention (by any id they quote)."""
    by_subject: dict[str, list[invariants.Event]] = {}
    for event in events:
        by_subject.setdefault(event.subject, []).append(event)
    named: dict[str, list[dict]] = {}
    for violation in violations[:limit]:
        for subject, incident_events in by_subject.items():
            ids = {subject} | {str(v) for e in incident_events for k, v in e.data.items() if k.endswith("_id")}
            if subject not in named and any(i in violation for i in ids):
                named[subject] = [{"type": e.type, "id": e.id, **e.data} for e in incident_events]
    return named
