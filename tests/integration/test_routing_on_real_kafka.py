"""Routing in-process on a real Kafka broker and a real PostgreSQL: whistle, decline, bounce cap, fallback,
roster, the escalation ladder, reassignment, refusals with their audit rows, idempotency.

One routing app, topic set and database serve the whole module (starting them is most of the cost);
each test makes its own incidents and first moves the shared clock forward to a known instant.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import pytest_asyncio

from contracts.envelope import Envelope, Event, correlation_for, make_envelope
from contracts.events import DeadlineBreached, IncidentClassified
from contracts.topics import CLASSIFICATION_DECISIONS, ROUTING_HANDOFFS, SLA_DEADLINES, TopicSpec
from contracts.vocabulary import Category, DeadlineKind, Urgency
from services.routing import repository as repo
from services.routing.app import create_app
from services.routing.settings import RoutingSettings
from services.runtime.clock import FakeClock
from tests._infra import PostgresServer, create_test_topics, delete_test_topics
from tests.e2e.stack import eventually, read_topic
from tests.support import SignedAsActor

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

GRID = "G0001"  # station S0101, officer unit U-POL-P0001 (on duty mon/thu/sun from 08:00), teammate P0013 on tue/fri
SHANGHAI = ZoneInfo("Asia/Shanghai")
MONDAY, FRIDAY = 0, 4
REFERENCE_VERSION, ROSTER_VERSION = "demo-city-2026-860g-320p", "demo-roster-2026.2"


def next_local(after: datetime, weekday: int, hour: int) -> datetime:
    """The first instant after `after` that is `weekday` at `hour`:00 in Shanghai, as UTC."""
    local = after.astimezone(SHANGHAI)
    at = local.replace(hour=hour, minute=0, second=0, microsecond=0) + timedelta(days=(weekday - local.weekday()) % 7)
    if at <= local:
        at += timedelta(days=7)
    return at.astimezone(UTC)


@dataclass
class Running:
    """Routing on the real broker, its clock, an HTTP client and where its facts land."""

    app: Any
    clock: FakeClock
    http: httpx.AsyncClient
    bootstrap: str
    prefix: str

    async def publish(self, spec: TopicSpec, event: Event, incident_id: str, *, times: int = 1) -> Envelope:
        runtime = self.app.state.runtime
        envelope = make_envelope(event, source="test", subject=incident_id, occurred_at=self.clock.now(),
                                 correlation_id=correlation_for(incident_id))
        for _ in range(times):  # the same envelope (same event id) again: a redelivery
            await runtime.broker.publish(envelope.encode(), runtime.topic(spec), key=envelope.key(),
                                         headers=envelope.headers())
        return envelope

    async def classify(self, incident_id: str, category: Category, urgency: Urgency, *, grid: str = GRID,
                       times: int = 1) -> Envelope:
        event = IncidentClassified(incident_id=incident_id, grid_id=grid, category=category, urgency=urgency,
                                   priority=2, confidence=0.9, classifier_version="test")
        return await self.publish(CLASSIFICATION_DECISIONS, event, incident_id, times=times)

    async def breach(self, handoff: Any) -> None:
        """What sla_timer publishes when a handoff's report deadline passes unreported (`handoff`: a dispatch)."""
        await self.publish(SLA_DEADLINES, DeadlineBreached(
            incident_id=handoff.incident_id, deadline_id=f"report:{handoff.handoff_id}", handoff_id=handoff.handoff_id,
            kind=DeadlineKind.REPORT, due_at=handoff.report_due_at, urgency=handoff.urgency, unit_id=handoff.unit_id,
            fired_at=self.clock.now()), handoff.incident_id)

    async def facts(self, incident_id: str, count: int, what: str) -> list[Envelope]:
        """Routing's facts about an incident on the real topic, once at least `count` have arrived."""
        topic = self.prefix + ROUTING_HANDOFFS.name
        return await eventually(lambda: read_topic(self.bootstrap, topic, subject=incident_id),
                                lambda found: len(found) >= count, what=what)

    async def settled_facts(self, incident_id: str) -> list[Envelope]:
        """Every fact after the outbox had time to publish anything extra (a second effect would show)."""
        await asyncio.sleep(1.0)
        return await read_topic(self.bootstrap, self.prefix + ROUTING_HANDOFFS.name, subject=incident_id)

    async def until(self, fetch: Callable[[], Awaitable[Any]], accept: Callable[[Any], bool], what: str) -> Any:
        return await eventually(fetch, accept, timeout=15, what=what)

    async def handoffs(self, incident_id: str) -> list[dict]:
        """The incident's handoffs from routing's HTTP view (empty until the first is stored)."""
        response = await self.http.get(f"/api/v1/incidents/{incident_id}/handoffs")
        return response.json()["handoffs"] if response.status_code == 200 else []

    async def audit(self, handoff_id: str) -> list[tuple[str, str, bool, str]]:
        """The audit rows of a handoff in routing's PostgreSQL: (actor, action, allowed, reason)."""
        async with self.app.state.runtime.engine.connect() as conn:
            rows = await repo.audit_rows(conn, handoff_id)
        return [(r.actor, r.action, r.allowed, r.reason) for r in rows]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(kafka_bootstrap: str, postgres_server: PostgresServer) -> AsyncIterator[Running]:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    topics = await create_test_topics(kafka_bootstrap, prefix)
    database = f"t_routing_real_kafka_{uuid.uuid4().hex[:8]}"
    url = postgres_server.create_database(database)
    clock = FakeClock()
    settings = RoutingSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, database_url=url,
                               outbox_poll_seconds=0.1)
    app = create_app(settings, clock=clock)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://routing", auth=SignedAsActor(app)) as http:
                yield Running(app, clock, http, kafka_bootstrap, prefix)
    finally:
        postgres_server.drop_database(database)
        await delete_test_topics(kafka_bootstrap, topics)


@pytest.fixture
def routing(running: Running) -> Running:
    """The module's routing, its clock moved on to the next Monday 16:00 in Shanghai (P0001 on duty)."""
    running.clock.set(next_local(running.clock.now(), MONDAY, 16))
    return running


def of_type(envelopes: list[Envelope], event_type: str) -> list[Envelope]:
    return [e for e in envelopes if e.type == event_type]


async def test_whistle_fans_out_on_the_topic_and_a_decline_reroutes_with_the_remaining_budget(routing: Running) -> None:
    incident = str(uuid.uuid4())
    await routing.classify(incident, Category.FIRE, Urgency.URGENT)
    dispatched = await routing.facts(incident, 3, "three handoffs dispatched")
    due = routing.clock.now() + timedelta(minutes=15)
    assert [(e.data.unit_id, e.data.role.value) for e in dispatched] == [
        ("U-FIRE_RESCUE-D01", "lead"), ("U-POL-P0001", "co_operating"), ("U-HEALTH-D01", "co_operating"),
    ]
    assert len({e.data.handoff_id for e in dispatched}) == 3 and {e.data.report_due_at for e in dispatched} == {due}
    assert all(e.key() == incident.encode() for e in dispatched)
    assert {(e.data.reference_version, e.data.roster_version) for e in dispatched} == {(REFERENCE_VERSION, ROSTER_VERSION)}

    routing.clock.advance(timedelta(minutes=6))
    health = next(e.data for e in dispatched if e.data.unit_id == "U-HEALTH-D01")
    response = await routing.http.post(f"/api/v1/handoffs/{health.handoff_id}/decline",
                                       json={"actor_id": "health-D01-1", "reason_code": "no_capacity"})
    assert response.status_code == 200, response.text
    after = await routing.facts(incident, 5, "the decline and its re-route")
    assert [e.type for e in after[3:]] == ["HandoffDeclined", "HandoffDispatched"]
    successor = after[4].data
    assert (successor.unit_id, successor.bounce_count, successor.replaces_handoff_id) == ("U-DESK-S0101", 1, health.handoff_id)
    assert successor.report_due_at == due, "a re-route keeps the remaining budget, never a fresh one"
    assert successor.dispatched_at == routing.clock.now()
    assert successor.reference_version == REFERENCE_VERSION
    view = (await routing.http.get(f"/api/v1/incidents/{incident}/handoffs")).json()
    others = [h for h in view["handoffs"] if h["unit_id"] in ("U-FIRE_RESCUE-D01", "U-POL-P0001")]
    assert {h["state"] for h in others} == {"dispatched"}, "the other units' handoffs are independent"


async def test_declines_up_to_the_bounce_cap_leave_the_command_centre_owning_it(routing: Running) -> None:
    incident = str(uuid.uuid4())
    await routing.classify(incident, Category.THEFT, Urgency.GENERAL)
    officer = (await routing.facts(incident, 1, "the officer dispatched"))[0].data
    holder = officer.handoff_id
    for actor in ("P0001", "desk-S0101-1"):  # max_bounces is 2: the second decline is the last one allowed
        routing.clock.advance(timedelta(minutes=10))
        response = await routing.http.post(f"/api/v1/handoffs/{holder}/decline",
                                           json={"actor_id": actor, "reason_code": "no_capacity"})
        assert response.status_code == 200, response.text
        holder = response.json()["successor_handoff_id"]
    facts = await routing.facts(incident, 5, "two declines and their re-routes")
    assert [e.type for e in facts] == ["HandoffDispatched", "HandoffDeclined", "HandoffDispatched",
                                       "HandoffDeclined", "HandoffDispatched"]
    desk, centre = facts[2].data, facts[4].data
    assert (desk.unit_id, desk.bounce_count) == ("U-DESK-S0101", 1)
    assert (centre.unit_id, centre.department, centre.role.value, centre.bounce_count) == ("U-CMD-D01", "command", "lead", 2)
    assert centre.report_due_at == officer.report_due_at, "bouncing never buys a fresh deadline"
    queue = (await routing.http.get("/api/v1/command-centres/D01/queue")).json()["handoffs"]
    assert (centre.handoff_id, "bounced") in [(h["handoff_id"], h["why"]) for h in queue]

    refused = await routing.http.post(f"/api/v1/handoffs/{centre.handoff_id}/decline",
                                      json={"actor_id": "cmd-D01-1", "reason_code": "no_capacity"})
    assert refused.status_code == 409 and "owner of last resort" in refused.json()["detail"]
    [(actor, action, allowed, reason)] = await routing.audit(centre.handoff_id)
    assert (actor, action, allowed) == ("cmd-D01-1", "decline", True) and reason.startswith("conflict: ")
    assert len(await routing.settled_facts(incident)) == 5


async def test_an_unroutable_whistle_goes_to_the_command_centre_as_fallback(routing: Running) -> None:
    incident = str(uuid.uuid4())
    await routing.classify(incident, Category.THEFT, Urgency.URGENT, grid="G-NOWHERE")
    [fallback] = await routing.facts(incident, 1, "the fallback dispatched")
    assert (fallback.data.unit_id, fallback.data.department, fallback.data.role.value) == ("U-CMD-D01", "command", "lead")
    assert fallback.data.report_due_at == routing.clock.now() + timedelta(minutes=15)
    queue = (await routing.http.get("/api/v1/command-centres/D01/queue")).json()["handoffs"]
    assert (fallback.data.handoff_id, "fallback") in [(h["handoff_id"], h["why"]) for h in queue]


async def test_an_off_duty_officer_is_replaced_by_the_rostered_teammate(routing: Running) -> None:
    routing.clock.set(next_local(routing.clock.now(), FRIDAY, 10))  # P0001 is off; P0013 has the 24-hour duty
    incident = str(uuid.uuid4())
    await routing.classify(incident, Category.THEFT, Urgency.URGENT)
    [stand_in] = await routing.facts(incident, 1, "the stand-in dispatched")
    assert (stand_in.data.unit_id, stand_in.data.role.value, stand_in.data.department) == ("U-POL-P0013", "lead", "police")
    assert stand_in.data.report_due_at == routing.clock.now() + timedelta(minutes=15)
    assert stand_in.data.roster_version == ROSTER_VERSION
    ack = await routing.http.post(f"/api/v1/handoffs/{stand_in.data.handoff_id}/acknowledge", json={"actor_id": "P0013"})
    assert ack.status_code == 200, ack.text
    assert [e.type for e in await routing.facts(incident, 2, "the stand-in's report")] == [
        "HandoffDispatched", "HandoffAcknowledged"]


async def test_breaches_on_the_real_topic_climb_the_ladder_to_the_top_and_repeat_there(routing: Running) -> None:
    incident = str(uuid.uuid4())
    await routing.classify(incident, Category.THEFT, Urgency.GENERAL)
    breached: Any = (await routing.facts(incident, 1, "the officer dispatched"))[0].data
    for rung in range(1, 6):  # desk, command centre, then its 3 repeats (max_escalation_repeats)
        routing.clock.set(breached.report_due_at)
        await routing.breach(breached)
        handoffs = await routing.until(lambda: routing.handoffs(incident),
                                       lambda found: sum(h["role"] == "escalation" for h in found) == rung,
                                       what=f"escalation rung {rung}")
        latest = [h for h in handoffs if h["role"] == "escalation"][-1]
        breached = await routing.until(lambda: _dispatch_of(routing, incident, latest["handoff_id"]),
                                       lambda found: found is not None, what=f"rung {rung} on the topic")
    routing.clock.set(breached.report_due_at)
    await routing.breach(breached)  # the cap is spent: the command centre's queue keeps it, nothing new
    facts = await routing.settled_facts(incident)
    escalated = [e.data for e in of_type(facts, "IncidentEscalated")]
    assert [(e.level, e.unit_id) for e in escalated] == [
        (1, "U-DESK-S0101"), (2, "U-CMD-D01"), (2, "U-CMD-D01"), (2, "U-CMD-D01"), (2, "U-CMD-D01")]
    assert escalated[-1].reason.endswith("(repeat 3 of 3 at the top level)")
    rungs = [e.data for e in of_type(facts, "HandoffDispatched") if e.data.role.value == "escalation"]
    assert [(r.unit_id, r.escalation_level) for r in rungs] == [
        ("U-DESK-S0101", 1), ("U-CMD-D01", 2), ("U-CMD-D01", 2), ("U-CMD-D01", 2), ("U-CMD-D01", 2)]
    released = {e.data.handoff_id for e in of_type(facts, "HandoffReleased")}
    assert released == {r.handoff_id for r in rungs[:-1]}, "one open rung at a time: each gives way to the next"
    lead = next(h for h in await routing.handoffs(incident) if h["role"] == "lead")
    assert (lead["unit_id"], lead["state"]) == ("U-POL-P0001", "dispatched"), "the ladder never takes the lead"


async def _dispatch_of(routing: Running, incident_id: str, handoff_id: str) -> Any | None:
    facts = await read_topic(routing.bootstrap, routing.prefix + ROUTING_HANDOFFS.name, subject=incident_id, idle=0.3)
    return next((e.data for e in of_type(facts, "HandoffDispatched") if e.data.handoff_id == handoff_id), None)


async def test_a_dispatcher_reassigns_and_the_new_handoff_keeps_the_due_instant(routing: Running) -> None:
    incident = str(uuid.uuid4())
    await routing.classify(incident, Category.ENVIRONMENT, Urgency.GENERAL)
    dispatched = await routing.facts(incident, 3, "the whistle")
    lead = next(e.data for e in dispatched if e.data.role.value == "lead")
    assert lead.unit_id == "U-URBAN_MANAGEMENT-D01"
    url = f"/api/v1/handoffs/{lead.handoff_id}/reassign"
    refused = await routing.http.post(url, json={"actor_id": "P0001", "to_unit_id": "U-HOUSING-D01"})
    assert refused.status_code == 403 and "not a dispatcher" in refused.json()["detail"]
    routing.clock.advance(timedelta(minutes=30))
    moved = await routing.http.post(url, json={"actor_id": "cmd-D01-1", "to_unit_id": "U-HOUSING-D01", "reason": "a building"})
    assert moved.status_code == 200, moved.text
    facts = await routing.facts(incident, 5, "the reassignment and its dispatch")
    assert [e.type for e in facts[3:]] == ["HandoffReassigned", "HandoffDispatched"]
    reassigned, new = facts[3].data, facts[4].data
    assert (reassigned.from_unit_id, reassigned.to_unit_id, reassigned.new_handoff_id) == (
        "U-URBAN_MANAGEMENT-D01", "U-HOUSING-D01", new.handoff_id)
    assert (new.unit_id, new.role.value, new.replaces_handoff_id) == ("U-HOUSING-D01", "lead", lead.handoff_id)
    assert new.report_due_at == lead.report_due_at and new.dispatched_at == routing.clock.now()
    assert [(a, act, ok) for a, act, ok, _ in await routing.audit(lead.handoff_id)] == [
        ("P0001", "reassign", False), ("cmd-D01-1", "reassign", True)]


async def test_an_unauthorised_acknowledgement_is_refused_audited_and_publishes_nothing(routing: Running) -> None:
    incident = str(uuid.uuid4())
    await routing.classify(incident, Category.THEFT, Urgency.URGENT)
    officer = (await routing.facts(incident, 1, "the officer dispatched"))[0].data
    url = f"/api/v1/handoffs/{officer.handoff_id}/acknowledge"
    refused = await routing.http.post(url, json={"actor_id": "P0002"})
    assert refused.status_code == 403 and "not a member of unit U-POL-P0001" in refused.json()["detail"]
    [(actor, action, allowed, reason)] = await routing.audit(officer.handoff_id)
    assert (actor, action, allowed) == ("P0002", "acknowledge", False) and "not a member" in reason
    assert [e.type for e in await routing.settled_facts(incident)] == ["HandoffDispatched"]
    assert (await routing.http.get(f"/api/v1/handoffs/{officer.handoff_id}")).json()["state"] == "dispatched"


async def test_refused_decline_and_resolve_over_http_are_audited(routing: Running) -> None:
    incident = str(uuid.uuid4())
    await routing.classify(incident, Category.THEFT, Urgency.GENERAL)
    officer = (await routing.facts(incident, 1, "the officer dispatched"))[0].data
    url = f"/api/v1/handoffs/{officer.handoff_id}"
    resolution = {"disposition": "resolved", "note": "done"}
    decline = await routing.http.post(f"{url}/decline", json={"actor_id": "health-D01-1", "reason_code": "no_capacity"})
    foreign = await routing.http.post(f"{url}/resolve", json={"actor_id": "P0002", **resolution})
    early = await routing.http.post(f"{url}/resolve", json={"actor_id": "P0001", **resolution})
    assert (decline.status_code, foreign.status_code, early.status_code) == (403, 403, 409)
    assert "not been acknowledged" in early.json()["detail"]
    rows = await routing.audit(officer.handoff_id)
    assert [(a, act, ok) for a, act, ok, _ in rows] == [
        ("health-D01-1", "decline", False), ("P0002", "resolve", False), ("P0001", "resolve", True)]
    assert "not a member" in rows[0][3] and "not a member" in rows[1][3] and rows[2][3].startswith("conflict: ")
    assert [e.type for e in await routing.settled_facts(incident)] == ["HandoffDispatched"]


async def test_a_breach_from_the_deadlines_topic_escalates_with_an_escalation_handoff(routing: Running) -> None:
    incident = str(uuid.uuid4())
    await routing.classify(incident, Category.THEFT, Urgency.GENERAL)
    officer = (await routing.facts(incident, 1, "the officer dispatched"))[0].data
    routing.clock.advance(timedelta(hours=2))
    await routing.breach(officer)
    facts = await routing.facts(incident, 3, "the escalation")
    rung, escalated = of_type(facts, "HandoffDispatched")[1].data, of_type(facts, "IncidentEscalated")[0].data
    assert (rung.unit_id, rung.role.value, rung.escalation_level) == ("U-DESK-S0101", "escalation", 1)
    assert rung.report_due_at == routing.clock.now() + timedelta(minutes=15)
    assert (escalated.level, escalated.unit_id, escalated.trigger_handoff_id) == (1, "U-DESK-S0101", officer.handoff_id)
    assert escalated.reason == "report deadline breached by unit U-POL-P0001"


async def test_a_redelivered_event_and_a_repeated_command_each_have_one_effect(routing: Running) -> None:
    incident = str(uuid.uuid4())
    await routing.classify(incident, Category.THEFT, Urgency.URGENT, times=2)
    officer = (await routing.facts(incident, 1, "the officer dispatched"))[0].data
    url = f"/api/v1/handoffs/{officer.handoff_id}/acknowledge"
    first, second = [await routing.http.post(url, json={"actor_id": "P0001"}) for _ in range(2)]
    assert first.status_code == second.status_code == 200 and first.json() == second.json()
    facts = await routing.settled_facts(incident)
    assert [e.type for e in facts] == ["HandoffDispatched", "HandoffAcknowledged"]
