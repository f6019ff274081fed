"""Each service's HTTP API fuzzed from its own OpenAPI document (schemathesis) against the running system.

For every operation of intake, classification, routing, sla_timer and closure, schemathesis draws
requests that fit the schema and requests that break it (wrong types, missing fields, junk path
and query values), sent with a valid bearer token of the role that operation serves, once with
generated path ids and once with the ids of a real incident. Every answer must be below 500, and
an answer refusing the request (4xx) must leave the service's database as it was: every table
(but the access audit, which records the refusal) is digested before and after.

The default run is bounded (GW_FUZZ_EXAMPLES per operation and mode, 6 by default) so it fits in
`make test`; `-m slow` adds a longer run (GW_FUZZ_LONG_EXAMPLES, default 60).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.e2e.stack import Stack, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(900)]

SERVICES = ("intake", "classification", "routing", "sla_timer", "closure")
# The token each API is fuzzed with: the role its commands are for, in the seeded incident's area
# (grid G0001, station S0101). Refusals of other roles are the access suite's business.
FUZZ_AS = {
    "intake": "W0001",  # grid worker of G0001: reports, reads own grids
    "classification": "desk-S0101-1",  # dispatcher of the station: reclassifies
    "routing": "desk-S0101-1",  # dispatcher: reassigns, summons, reads the queues
    "sla_timer": "desk-S0101-1",  # dispatcher: pauses and resumes
    "closure": "W0001",  # grid worker: verifies and gives feedback
}
# Written by the service itself whatever the request: the refusal's audit rows (the runtime's
# access_audit, and routing's command trail, which records every attempt), schema bookkeeping.
NOT_STATE = {"access_audit", "audit_log", "alembic_version"}
EXAMPLES = int(os.environ.get("GW_FUZZ_EXAMPLES", "6"))
LONG_EXAMPLES = int(os.environ.get("GW_FUZZ_LONG_EXAMPLES", "60"))


class Digest:
    """A fingerprint of every table of one service database (a persistent connection of its own)."""

    def __init__(self, url: str) -> None:
        self._url = url.replace("postgresql+asyncpg://", "postgresql://")
        self._loop = asyncio.new_event_loop()
        self._conn: asyncpg.Connection | None = None
        self._query: str | None = None

    def _run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    async def _prepare(self) -> None:
        self._conn = await asyncpg.connect(self._url)
        tables = [r["table_name"] for r in await self._conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )]
        parts = []
        for table in sorted(set(tables) - NOT_STATE):
            if table == "outbox":
                # The relay stamps published_at in the background: what counts is which events exist.
                parts.append("(SELECT md5(coalesce(string_agg(event_id, ',' ORDER BY event_id), '')) FROM outbox) AS outbox")
            else:
                parts.append(
                    f"(SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM \"{table}\" t) AS \"{table}\""
                )
        self._query = "SELECT " + ", ".join(parts)

    def take(self) -> dict[str, str]:
        """{table: digest of its rows} right now."""
        if self._conn is None:
            self._run(self._prepare())
        return dict(self._run(self._conn.fetchrow(self._query)))

    def close(self) -> None:
        if self._conn is not None:
            self._run(self._conn.close())
        self._loop.close()


@dataclass
class Findings:
    """What one service's fuzzing found and how much it checked."""

    server_errors: list[str] = field(default_factory=list)
    changed_on_refusal: list[str] = field(default_factory=list)
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    refusals_checked: int = 0
    refusals_inconclusive: int = 0  # a consumed event changed the database meanwhile


@pytest.fixture(scope="module")
def seeded(stack: Stack) -> dict[str, str]:
    """A real dispatched incident in grid G0001 (urgent: its clocks run 15 minutes) and its ids."""

    async def seed() -> dict[str, str]:
        async with httpx.AsyncClient(timeout=15) as client:
            response = await client.post(
                f"{stack.url('intake')}/api/v1/incidents",
                json={"grid_id": "G0001", "reporter_id": "W0001", "description": "楼下有人打架，有人流血",
                      "location": {"address": "幸福路8号"}},
                headers={"Idempotency-Key": str(uuid.uuid4()), **stack.as_user("W0001")},
            )
            assert response.status_code == 202, response.text
            incident_id = response.json()["incident_id"]

            async def handoffs() -> list[dict]:
                answer = await client.get(f"{stack.url('routing')}/api/v1/incidents/{incident_id}/handoffs",
                                          headers=stack.as_user("admin"))
                return answer.json().get("handoffs", []) if answer.status_code == 200 else []

            found = await eventually(handoffs, lambda h: len(h) >= 1, timeout=90, what="the seeded incident dispatched")

            async def deadlines() -> list[dict]:
                answer = await client.get(f"{stack.url('sla_timer')}/api/v1/deadlines",
                                          params={"incident_id": incident_id}, headers=stack.as_user("admin"))
                return answer.json() if answer.status_code == 200 else []

            armed = await eventually(deadlines, lambda d: len(d) >= 1, timeout=60, what="its deadlines armed")
        return {
            "incident_id": incident_id,
            "handoff_id": found[0]["handoff_id"],
            "unit_id": found[0]["unit_id"],
            "deadline_id": armed[0]["id"],
            "district_id": "D01",
            "code": found[0].get("department", "police"),
        }

    return asyncio.run(seed())


def quiet(digest: Digest, settle: float = 0.5, timeout: float = 10.0) -> None:
    """Wait until the service's database stops changing (what an accepted command set off has landed)."""
    deadline = time.monotonic() + timeout
    before = digest.take()
    while time.monotonic() < deadline:
        time.sleep(settle)
        now = digest.take()
        if now == before:
            return
        before = now


def fuzz_service(stack: Stack, service: str, seeded: dict[str, str], examples: int) -> Findings:
    schema = schemathesis.openapi.from_url(f"{stack.url(service)}/openapi.json", timeout=15)
    headers = stack.as_user(FUZZ_AS[service])
    digest = Digest(stack.databases[service])
    findings = Findings()

    def check(case: Any) -> None:
        before = digest.take()
        response = case.call(base_url=stack.url(service), headers=headers, timeout=20)
        findings.requests += 1
        findings.statuses[response.status_code] = findings.statuses.get(response.status_code, 0) + 1
        label = f"{case.method} {case.formatted_path} query={case.query} body={str(case.body)[:200]}"
        if response.status_code >= 500:
            findings.server_errors.append(f"{response.status_code} {label}: {response.text[:300]}")
            quiet(digest)
            return
        if 400 <= response.status_code < 500:
            after = digest.take()
            changed = sorted(t for t in after if after[t] != before[t])
            if not changed:
                findings.refusals_checked += 1
            elif "processed_events" in changed:
                findings.refusals_inconclusive += 1  # a consumed event landed meanwhile
                quiet(digest)
            else:
                findings.changed_on_refusal.append(f"{response.status_code} {label}: changed {changed}")
        elif case.method != "GET":
            quiet(digest)  # an accepted command: let what it set off settle before the next case

    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            known = {p: seeded[p] for p in seeded if f"{{{p}}}" in operation.path}
            variants = [(GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None)]
            if known:
                variants += [(GenerationMode.POSITIVE, known), (GenerationMode.NEGATIVE, known)]
            for mode, path_parameters in variants:
                strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

                @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
                @given(case=strategy)
                def run(case: Any) -> None:
                    check(case)

                try:
                    run()
                except Unsatisfiable:
                    pass  # e.g. no negative variant of an operation without parameters
    finally:
        digest.close()
    return findings


def _report(service: str, findings: Findings) -> str:
    return (
        f"{service}: {findings.requests} requests, statuses {dict(sorted(findings.statuses.items()))}, "
        f"{findings.refusals_checked} refusals checked unchanged ({findings.refusals_inconclusive} inconclusive)"
    )


def assert_clean(service: str, findings: Findings) -> None:
    print(_report(service, findings))
    problems = findings.server_errors + findings.changed_on_refusal
    assert not problems, _report(service, findings) + "\n" + "\n".join(problems[:20])
    assert findings.requests > 0 and findings.refusals_checked > 0, _report(service, findings)


@pytest.fixture(scope="module")
def stack_and_seed(stack: Stack, seeded: dict[str, str]) -> Iterator[tuple[Stack, dict[str, str]]]:
    yield stack, seeded


@pytest.mark.parametrize("service", SERVICES)
def test_fuzzed_requests_never_answer_5xx_and_refusals_change_nothing(stack_and_seed, service: str):
    stack, seeded = stack_and_seed
    assert_clean(service, fuzz_service(stack, service, seeded, EXAMPLES))


@pytest.mark.slow
@pytest.mark.parametrize("service", SERVICES)
def test_a_longer_fuzz_run_never_answers_5xx_and_refusals_change_nothing(stack_and_seed, service: str):
    stack, seeded = stack_and_seed
    assert_clean(service, fuzz_service(stack, service, seeded, LONG_EXAMPLES))
