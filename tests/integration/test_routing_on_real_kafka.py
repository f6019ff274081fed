"""Routing in-process on a real Kafka broker and a real PostgreSQL: whistle, decline, escalation, idempotency."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest

from contracts.envelope import Envelope, Event, correlation_for, make_envelope
from contracts.events import DeadlineBreached, IncidentClassified
from contracts.topics import CLASSIFICATION_DECISIONS, ROUTING_HANDOFFS, SLA_DEADLINES, TopicSpec
from contracts.vocabulary import Category, DeadlineKind, Urgency
from services.routing.app import create_app
from services.routing.settings import RoutingSettings
from services.runtime.clock import FakeClock
from tests.e2e.stack import eventually, read_topic

pytestmark = pytest.mark.integration

GRID = "G0001"  # station S0101, officer unit U-POL-P0001; the FakeClock starts at 16:00 Shanghai, on duty


@dataclass
class Running:
    """Routing on the real broker, its clock, an HTTP client and where its facts land."""

    app: object
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

    async def classify(self, incident_id: str, category: Category, urgency: Urgency, *, times: int = 1) -> Envelope:
        event = IncidentClassified(incident_id=incident_id, grid_id=GRID, category=category, urgency=urgency,
                                   priority=2, confidence=0.9, classifier_version="test")
        return await self.publish(CLASSIFICATION_DECISIONS, event, incident_id, times=times)

    async def facts(self, incident_id: str, count: int, what: str) -> list[Envelope]:
        """Routing's facts about an incident on the real topic, once at least `count` have arrived."""
        topic = self.prefix + ROUTING_HANDOFFS.name
        return await eventually(lambda: read_topic(self.bootstrap, topic, subject=incident_id),
                                lambda found: len(found) >= count, what=what)

    async def settled_facts(self, incident_id: str) -> list[Envelope]:
        """Every fact after the outbox had time to publish anything extra (a second effect would show)."""
        await asyncio.sleep(1.0)
        return await read_topic(self.bootstrap, self.prefix + ROUTING_HANDOFFS.name, subject=incident_id)


@pytest.fixture
async def routing(kafka_bootstrap, kafka_topics, topic_prefix, pg_url) -> AsyncIterator[Running]:
    clock = FakeClock()
    settings = RoutingSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix,
                               database_url=pg_url, outbox_poll_seconds=0.1)
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://routing") as http:
            yield Running(app, clock, http, kafka_bootstrap, topic_prefix)


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
    view = (await routing.http.get(f"/api/v1/incidents/{incident}/handoffs")).json()
    others = [h for h in view["handoffs"] if h["unit_id"] in ("U-FIRE_RESCUE-D01", "U-POL-P0001")]
    assert {h["state"] for h in others} == {"dispatched"}, "the other units' handoffs are independent"


async def test_a_breach_from_the_deadlines_topic_escalates_with_an_escalation_handoff(routing: Running) -> None:
    incident = str(uuid.uuid4())
    await routing.classify(incident, Category.THEFT, Urgency.GENERAL)
    officer = (await routing.facts(incident, 1, "the officer dispatched"))[0].data
    routing.clock.advance(timedelta(hours=2))
    await routing.publish(SLA_DEADLINES, DeadlineBreached(
        incident_id=incident, deadline_id=f"report:{officer.handoff_id}", handoff_id=officer.handoff_id,
        kind=DeadlineKind.REPORT, due_at=officer.report_due_at, urgency=Urgency.GENERAL, unit_id=officer.unit_id,
        fired_at=routing.clock.now()), incident)
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
