"""SLA timer benchmark: firing lateness at 100k / 1M pending, a same-second burst, arm and cancel
rates through the consumer path, catch-up after a SIGKILL, and resident memory.

The service runs as its own OS process (`python -m services.sla_timer`) on a real broker and a
real PostgreSQL. Lateness is measured by a consumer of the real deadlines topic: `fired_at − due_at`
(the scheduler's own lateness, from the event) and `received − due_at` (what a subscriber sees,
including the outbox relay and Kafka). Pending deadlines are bulk-inserted with COPY, far in the
future; the measured ones are bulk-armed too and come due over the next seconds; arming and
cancelling through Kafka (`HandoffDispatched`, `HandoffAcknowledged`) is measured as rates, each
the drain of a backlog produced while the service was stopped, and the arm rate beside a
raw-aiokafka baseline doing the same work (`bench.raw_sla_arm`).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.harness import (
    BASELINE,
    Infrastructure,
    Result,
    percentiles,
    process_cpu_seconds,
    process_rss_mib,
    service_process,
    start_baseline,
    stop_baseline,
    versions,
)
from contracts.envelope import Envelope, correlation_for, make_envelope
from contracts.events import HandoffAcknowledged, HandoffDispatched
from contracts.topics import ROUTING_HANDOFFS, SLA_DEADLINES
from contracts.vocabulary import Category, DeadlineKind, HandoffRole, Urgency
from infra.local import REPO_ROOT, ServiceProcess, create_topics
from services.sla_timer.domain import deadline_id

BENCH = "sla_timer"
UNIT = "U-POL-P0001"


@dataclass(frozen=True)
class Profile:
    """Sizes of one run."""

    pending: tuple[int, ...]  # lateness is measured once with each of these many pending deadlines
    measured: int  # deadlines armed (COPY) and fired during the lateness measurement
    spread_seconds: float  # they come due evenly over this many seconds
    burst: int  # deadlines due within the same second
    rate_events: int  # dispatches (then acks) pushed through the consumer for the arm / cancel rates
    backlog: int  # deadlines that come due while the service is SIGKILLed


PROFILES = {
    "short": Profile(pending=(100_000,), measured=2_000, spread_seconds=10.0, burst=10_000, rate_events=10_000, backlog=5_000),
    "long": Profile(
        pending=(100_000, 1_000_000), measured=4_000, spread_seconds=20.0, burst=10_000, rate_events=30_000,
        backlog=10_000,
    ),
}


def now_utc() -> datetime:
    """The wall clock, aware UTC (the service and this process share the machine's clock)."""
    return datetime.now(UTC)


# --- driving the service ------------------------------------------------------------------------


def sla_timer_process(
    bootstrap: str, prefix: str, database_url: str, log_dir: Path, log_name: str | None = None, **settings: str
) -> ServiceProcess:
    """The SLA timer as an OS process with this run's broker, topic prefix and database; its relay polls every 50 ms."""
    return service_process(
        "sla_timer", bootstrap, prefix, database_url, log_dir, log_name, **{"outbox_poll_seconds": "0.05", **settings}
    )


def dispatch(incident_id: str, handoff_id: str, dispatched_at: datetime, due_at: datetime) -> Envelope:
    """A HandoffDispatched as routing would send it."""
    event = HandoffDispatched(
        incident_id=incident_id, handoff_id=handoff_id, unit_id=UNIT, department="police", role=HandoffRole.LEAD,
        category=Category.VIOLENCE, urgency=Urgency.URGENT, grid_id="G0001", dispatched_at=dispatched_at,
        report_due_at=due_at,
    )
    return make_envelope(
        event, source="bench", subject=incident_id, occurred_at=dispatched_at, correlation_id=correlation_for(incident_id)
    )


def acknowledgement(incident_id: str, handoff_id: str, at: datetime) -> Envelope:
    """A HandoffAcknowledged (报到)."""
    event = HandoffAcknowledged(incident_id=incident_id, handoff_id=handoff_id, unit_id=UNIT, actor_id="P0001", acknowledged_at=at)
    return make_envelope(event, source="bench", subject=incident_id, occurred_at=at, correlation_id=correlation_for(incident_id))


async def produce(bootstrap: str, topic: str, envelopes: Iterable[Envelope]) -> int:
    """Send envelopes keyed by incident (acks=all, idempotent); return how many once all are acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        sent = [
            await producer.send(topic, e.encode(), key=e.key(), headers=[(k, v.encode()) for k, v in e.headers().items()])
            for e in envelopes
        ]
        await asyncio.gather(*sent)
        return len(sent)
    finally:
        await producer.stop()


@dataclass(frozen=True)
class Drain:
    """How a consumer worked off a backlog: from resuming to the last expected event received."""

    seconds: float
    done: int
    cpu_seconds: float
    produced_seconds: float

    @property
    def rate(self) -> float:
        return round(self.done / self.seconds, 1)

    @property
    def note(self) -> str:
        return f"the backlog was produced (in {self.produced_seconds:.1f} s) while the consumer was stopped"


async def drain_backlog(
    bootstrap: str, pid: int, topic: str, envelopes: list[Envelope], watcher: DeadlineWatcher, event_type: str,
    ids: list[str],
) -> Drain:
    """Produce `envelopes` while process `pid` is stopped (SIGSTOP), resume it, time until each id has `event_type`.

    The load generator shares the machine's two cores with the consumer: producing the backlog
    first keeps its CPU out of the figure. A few seconds stopped are within the group's session
    timeout, so resuming costs no rebalance.
    """
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        await produce(bootstrap, topic, envelopes)
        produced = time.monotonic() - t0
    finally:
        os.kill(pid, signal.SIGCONT)
    cpu0 = process_cpu_seconds(pid)
    t0 = time.monotonic()
    await watcher.wait_for(event_type, ids, timeout=600)
    seconds = time.monotonic() - t0
    return Drain(seconds, watcher.seen(event_type, ids), round(process_cpu_seconds(pid) - cpu0, 2), produced)


@dataclass
class Seen:
    """One deadline event as a subscriber received it: the fields the checks need."""

    event_id: str
    fired_at: datetime | None
    received_at: datetime


@dataclass
class DeadlineWatcher:
    """Reads the real deadlines topic from its current end, indexing events by type and deadline."""

    bootstrap: str
    topic: str
    by_type: dict[str, dict[str, list[Seen]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    _consumer: AIOKafkaConsumer | None = None
    _task: asyncio.Task | None = None

    async def start(self, from_beginning: bool = False) -> DeadlineWatcher:
        """Assign every partition (no group) and start reading in the background."""
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await self._consumer.start()
        await self._consumer._client.force_metadata_update()  # noqa: SLF001 - the first metadata fetch is lazy
        partitions = [TopicPartition(self.topic, p) for p in self._consumer.partitions_for_topic(self.topic) or ()]
        self._consumer.assign(partitions)
        if from_beginning:
            await self._consumer.seek_to_beginning(*partitions)
        else:
            await self._consumer.seek_to_end(*partitions)
            for tp in partitions:
                await self._consumer.position(tp)  # resolve the end now, before anything is produced
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            received_at = now_utc()
            for records in batch.values():
                for record in records:
                    # Only the fields the checks read: validating whole envelopes here cost the
                    # watcher about as much CPU per event as the service spends firing it, on the
                    # same two cores. The contract tests validate what the service emits.
                    event = json.loads(record.value)
                    data = event["data"]
                    fired_at = datetime.fromisoformat(data["fired_at"]) if "fired_at" in data else None
                    self.by_type[event["type"]][data["deadline_id"]].append(Seen(event["id"], fired_at, received_at))

    def seen(self, event_type: str, ids: Iterable[str]) -> int:
        """How many of `ids` have at least one event of this type so far."""
        index = self.by_type[event_type]
        return sum(1 for i in ids if i in index)

    async def wait_for(self, event_type: str, ids: list[str], timeout: float) -> float:
        """Wait until every id has an event of this type (or timeout); return the seconds waited."""
        started = time.monotonic()
        while self.seen(event_type, ids) < len(ids) and time.monotonic() - started < timeout:
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    async def stop(self) -> None:
        """Stop reading."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer:
            await self._consumer.stop()


@dataclass
class Firings:
    """Exactly-once checks and lateness of the breaches of a set of deadlines."""

    fired_lateness_ms: list[float]
    received_lateness_ms: list[float]
    early: int
    duplicate_records: int
    double_fired: int
    missed: int

    @property
    def checks(self) -> dict[str, int]:
        return {"early": self.early, "double_fired": self.double_fired, "duplicate_records": self.duplicate_records,
                "missed": self.missed}


def firings(watcher: DeadlineWatcher, due: dict[str, datetime]) -> Firings:
    """Compare every DeadlineBreached received for `due`'s deadlines against their due instants."""
    index = watcher.by_type["DeadlineBreached"]
    fired, received = [], []
    early = duplicates = double = missed = 0
    for deadline, due_at in due.items():
        copies = index.get(deadline, [])
        if not copies:
            missed += 1
            continue
        duplicates += len(copies) - 1
        double += len({c.event_id for c in copies}) - 1  # a second *firing* has a second event id
        first = copies[0]
        fired_at = first.fired_at
        early += fired_at < due_at or first.received_at < due_at
        fired.append((fired_at - due_at).total_seconds() * 1000)
        received.append((first.received_at - due_at).total_seconds() * 1000)
    return Firings(fired, received, early, duplicates, double, missed)


async def copy_deadlines(database_url: str, rows: list[tuple[str, datetime, datetime]]) -> float:
    """Bulk-insert armed REPORT deadlines (id, armed_at, due_at) with COPY; return the seconds it took."""
    started = time.monotonic()
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        records = [
            (d, str(uuid.uuid4()), str(uuid.uuid4()), UNIT, "report", "urgent", "violence", armed, due,
             (due - armed).total_seconds(), "armed", None, due, "[]", "bench")
            for d, armed, due in rows
        ]
        await conn.copy_records_to_table(
            "deadlines",
            records=records,
            columns=["id", "incident_id", "handoff_id", "unit_id", "kind", "urgency", "category", "armed_at", "due_at",
                     "window_seconds", "state", "next_warning_at", "next_fire_at", "warnings_sent", "policy_version"],
        )
        await conn.execute("ANALYZE deadlines")
    finally:
        await conn.close()
    return time.monotonic() - started


def far_future_rows(n: int) -> list[tuple[str, datetime, datetime]]:
    """`n` armed deadlines due 30 to 60 days from now (pending, never firing during the run)."""
    start = now_utc()
    return [(str(uuid.uuid4()), start, start + timedelta(days=30, seconds=i * 2.6)) for i in range(n)]


# --- the scenarios ------------------------------------------------------------------------------


@dataclass
class Run:
    """One service process, its database and the watcher, shared by the scenarios of a profile."""

    infra: Infrastructure
    service: ServiceProcess
    database_url: str
    prefix: str
    watcher: DeadlineWatcher
    log_dir: Path
    pending: int = 0

    @property
    def handoffs_topic(self) -> str:
        return self.prefix + ROUTING_HANDOFFS.name

    def result(self, variant: str, n: int, seconds: float, **values: object) -> Result:
        return Result(
            bench=BENCH, variant=variant, n=n, seconds=round(seconds, 3),
            versions=versions(kafka=self.infra.kafka_version, postgresql=self.infra.postgres_version), **values,
        )

    async def add_pending(self, total: int) -> None:
        """Bring the pending (far-future) deadlines up to `total`."""
        took = await copy_deadlines(self.database_url, far_future_rows(total - self.pending))
        print(f"[bench]   {total - self.pending:,} pending deadlines inserted with COPY in {took:.1f} s", flush=True)
        self.pending = total

    async def lateness(self, profile: Profile) -> list[Result]:
        """Arm `measured` deadlines due evenly over the next seconds; measure how late each one fires.

        They are armed with COPY, like rows another replica armed: the scheduler is not woken by
        them and must find each due instant itself. (Arming through Kafka is measured by `rates`;
        at its rate a large measured set would measure consumer lag instead of the scheduler.)
        """
        n = profile.measured
        armed = now_utc()
        lead = 3.0
        rows = [
            (str(uuid.uuid4()), armed, armed + timedelta(seconds=lead + random.uniform(0, profile.spread_seconds)))
            for _ in range(n)
        ]
        cpu0 = process_cpu_seconds(self.service.pid)
        t0 = time.monotonic()
        await copy_deadlines(self.database_url, rows)
        inserted = (now_utc() - armed).total_seconds()
        due = {d: at for d, _, at in rows}
        await self.watcher.wait_for("DeadlineBreached", list(due), timeout=lead + profile.spread_seconds + 30)
        seconds = time.monotonic() - t0
        cpu = process_cpu_seconds(self.service.pid) - cpu0
        found = firings(self.watcher, due)
        checks = {**found.checks, "armed_after_due": sum(1 for _, _, at in rows if at < armed + timedelta(seconds=inserted))}
        note = f"goal p99 <= 100 ms, max <= 1 s; {n:,} deadlines due over {profile.spread_seconds:.0f} s"
        return [
            self.result(f"lateness fired_at-due_at, {self.pending:,} pending", n, seconds, cpu_seconds=round(cpu, 2),
                        checks=checks, note=note, **percentiles(found.fired_lateness_ms)),
            self.result(f"lateness received-due_at, {self.pending:,} pending", n, seconds, checks=checks,
                        **percentiles(found.received_lateness_ms)),
        ]

    def memory(self) -> Result:
        """Resident memory of the service process now."""
        rss = process_rss_mib(self.service.pid)
        return self.result(f"resident memory, {self.pending:,} pending", self.pending, 0.0, max=round(rss, 1), unit="MiB")

    async def burst(self, profile: Profile, replicas: int = 1) -> list[Result]:
        """`burst` deadlines due within one second (bulk-armed); how long until every breach is out.

        With `replicas` > 1, that many SLA timer processes share the database: they split the firing
        through FOR UPDATE SKIP LOCKED, and one of them (the advisory-lock leader) relays it all.
        """
        n = profile.burst
        others = [
            sla_timer_process(self.infra.bootstrap, self.prefix, self.database_url, self.log_dir, f"sla_timer-{i}")
            for i in range(2, replicas + 1)
        ]
        try:
            for other in others:
                other.start()
                await asyncio.to_thread(other.wait_healthy, 120)
            pids = [self.service.pid, *(other.pid for other in others)]
            armed = now_utc()
            second = armed + timedelta(seconds=5)
            rows = [(str(uuid.uuid4()), armed, second + timedelta(microseconds=i * 1_000_000 // n)) for i in range(n)]
            await copy_deadlines(self.database_url, rows)
            due = {d: at for d, _, at in rows}
            cpu0 = sum(process_cpu_seconds(pid) for pid in pids)
            waited = await self.watcher.wait_for("DeadlineBreached", list(due), timeout=60)
            cpu = round(sum(process_cpu_seconds(pid) for pid in pids) - cpu0, 2)
        finally:
            for other in others:
                other.terminate()
        found = firings(self.watcher, due)
        fired_in = sum(1 for x in found.fired_lateness_ms if x <= 2000)
        received_in = sum(1 for x in found.received_lateness_ms if x <= 2000)
        shape = f"{replicas} replicas, " if replicas > 1 else ""
        return [
            self.result(
                f"burst: {n:,} due in the same second, {shape}fired_at-due_at", n, waited, cpu_seconds=cpu,
                checks={**found.checks, "fired_within_2s": f"{fired_in}/{n}"},
                **percentiles(found.fired_lateness_ms), note="goal: all fired within 2 s of their due instant",
            ),
            self.result(
                f"burst: {n:,} due in the same second, {shape}received-due_at", n, waited,
                checks={**found.checks, "received_within_2s": f"{received_in}/{n}"},
                **percentiles(found.received_lateness_ms),
                note="until a consumer of the deadlines topic has each breach (outbox relay and broker included)",
            ),
        ]

    async def rates(self, profile: Profile) -> list[Result]:
        """Arm rate (HandoffDispatched → DeadlineArmed) and cancel rate (HandoffAcknowledged → DeadlineCancelled)."""
        n = profile.rate_events
        at = now_utc()
        pairs = [(str(uuid.uuid4()), str(uuid.uuid4())) for _ in range(n)]
        report_ids = [deadline_id(h, DeadlineKind.REPORT) for _, h in pairs]
        far = at + timedelta(days=1)
        results = []
        for variant, envelopes, event_type in (
            ("arm rate: HandoffDispatched -> DeadlineArmed", [dispatch(i, h, at, far) for i, h in pairs], "DeadlineArmed"),
            (
                "cancel rate: HandoffAcknowledged -> DeadlineCancelled (+2 clocks armed each)",
                [acknowledgement(i, h, at + timedelta(seconds=1)) for i, h in pairs],
                "DeadlineCancelled",
            ),
        ):
            drain = await drain_backlog(self.infra.bootstrap, self.service.pid, self.handoffs_topic, envelopes,
                                        self.watcher, event_type, report_ids)
            results.append(
                self.result(
                    variant, n, drain.seconds, rate=drain.rate, cpu_seconds=drain.cpu_seconds,
                    checks={"completed": f"{drain.done}/{n}"}, unit="",
                    note=f"goal >= 5,000/s; {drain.note}; one transaction per fetched batch",
                )
            )
        raw = await self.raw_arm_rate(n)
        results[0].ratio = round(results[0].rate / raw.rate, 2) if raw.rate else None
        return [results[0], raw, *results[1:]]

    async def raw_arm_rate(self, n: int) -> Result:
        """The arm rate of `bench.raw_sla_arm` (plain aiokafka + asyncpg) on topics and a database of its own."""
        prefix = f"{self.prefix}raw."
        await create_topics(self.infra.bootstrap, prefix=prefix)
        database_url = await asyncio.to_thread(self.infra.create_database)
        proc = await start_baseline(
            "bench.raw_sla_arm",
            ["--bootstrap", self.infra.bootstrap, "--database-url", database_url,
             "--source", prefix + ROUTING_HANDOFFS.name, "--target", prefix + SLA_DEADLINES.name],
            REPO_ROOT / ".bench" / "logs" / "raw_sla_arm.log",
        )
        watcher: DeadlineWatcher | None = None
        try:
            # Once the process has its partitions: the new topics have their leaders by then.
            watcher = await DeadlineWatcher(self.infra.bootstrap, prefix + SLA_DEADLINES.name).start()
            at = now_utc()
            pairs = [(str(uuid.uuid4()), str(uuid.uuid4())) for _ in range(n)]
            report_ids = [deadline_id(h, DeadlineKind.REPORT) for _, h in pairs]
            envelopes = [dispatch(i, h, at, at + timedelta(days=1)) for i, h in pairs]
            drain = await drain_backlog(self.infra.bootstrap, proc.pid, prefix + ROUTING_HANDOFFS.name, envelopes,
                                        watcher, "DeadlineArmed", report_ids)
            return self.result(
                "raw-aiokafka arm rate: HandoffDispatched -> DeadlineArmed", n, drain.seconds, rate=drain.rate,
                cpu_seconds=drain.cpu_seconds, checks={"completed": f"{drain.done}/{n}"}, unit="", goal=BASELINE,
                note=f"bench.raw_sla_arm: the same claim, insert and outbox per fetched batch, then publish and mark; "
                f"measured the same way, so the ceiling of this machine for the figure; {drain.note}",
            )
        finally:
            if watcher is not None:
                await watcher.stop()
            stop_baseline(proc)

    async def restart_catch_up(self, profile: Profile) -> Result:
        """SIGKILL the service, let `backlog` deadlines come due while it is down, restart, time the catch-up."""
        n = profile.backlog
        self.service.kill()
        armed = now_utc()
        rows = [(str(uuid.uuid4()), armed, armed + timedelta(seconds=1, microseconds=i)) for i in range(n)]
        await copy_deadlines(self.database_url, rows)
        await asyncio.sleep(2)  # all of them are now overdue
        due = {d: at for d, _, at in rows}
        t0 = time.monotonic()
        self.service.start()
        await asyncio.to_thread(self.service.wait_healthy, 120)
        healthy = time.monotonic() - t0
        await self.watcher.wait_for("DeadlineBreached", list(due), timeout=600)
        seconds = time.monotonic() - t0
        found = firings(self.watcher, due)
        return self.result(
            f"restart catch-up after SIGKILL, {n:,} overdue", n, seconds, rate=round(n / seconds, 1),
            cpu_seconds=round(process_cpu_seconds(self.service.pid), 2), checks=found.checks, unit="",
            note=f"seconds from process start to the last breach received; healthy after {healthy:.1f} s",
        )


async def _run(infra: Infrastructure, profile: Profile, log_dir: Path) -> list[Result]:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    await create_topics(infra.bootstrap, prefix=prefix)
    database_url = await asyncio.to_thread(infra.create_database)
    service = sla_timer_process(infra.bootstrap, prefix, database_url, log_dir)
    service.start()
    await asyncio.to_thread(service.wait_healthy, 120)
    watcher = await DeadlineWatcher(infra.bootstrap, prefix + SLA_DEADLINES.name).start()
    run = Run(infra, service, database_url, prefix, watcher, log_dir)
    results: list[Result] = []
    step: Callable[[str], None] = lambda what: print(f"[bench]   {what}", flush=True)  # noqa: E731
    try:
        for pending in profile.pending:
            await run.add_pending(pending)
            step(f"lateness with {pending:,} pending")
            results += await run.lateness(profile)
            results.append(run.memory())
        step(f"burst of {profile.burst:,}")
        results += await run.burst(profile)
        step(f"arm and cancel rates ({profile.rate_events:,} each)")
        results += await run.rates(profile)
        step(f"restart catch-up ({profile.backlog:,} overdue)")
        results.append(await run.restart_catch_up(profile))
        # Last: a replica leaving rebalances the consumer group, which would disturb the rates.
        step(f"burst of {profile.burst:,} with 2 replicas")
        results += await run.burst(profile, replicas=2)
    finally:
        await watcher.stop()
        service.terminate()
    return results


def run(infra: Infrastructure, profile: str) -> list[Result]:
    """Run the SLA timer benchmark with the named profile."""
    log_dir = REPO_ROOT / ".bench" / "logs"
    return asyncio.run(_run(infra, PROFILES[profile], log_dir))
