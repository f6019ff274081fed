"""Routing through its real wiring: in-memory broker in, outbox rows out, HTTP commands, audit."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from faststream.kafka import TestKafkaBroker
from sqlalchemy import select

from contracts.envelope import Envelope, Event, correlation_for, make_envelope
from contracts.events import (
    CATALOGUE,
    DeadlineBreached,
    IncidentClassified,
    IncidentClosed,
    IncidentReclassified,
    IncidentReopened,
)
from contracts.reference import ReferenceDataError, demo_city
from contracts.topics import CLASSIFICATION_DECISIONS, CLOSURE_OUTCOMES, SLA_DEADLINES, TopicSpec
from contracts.vocabulary import Category, ClosureOutcome, DeadlineKind, Urgency
from services.routing.app import create_app
from services.routing.repository import audit_log
from services.routing.settings import RoutingSettings
from services.runtime.clock import FakeClock
from tests.support import SignedAsActor

GRID = "G0001"  # district D01, station S0101, officer P0001 (unit U-POL-P0001)


@dataclass
class Harness:
    """The running app, its clock and an HTTP client."""

    app: object
    clock: FakeClock
    http: httpx.AsyncClient

    @property
    def runtime(self):  # noqa: ANN201 - the ServiceRuntime
        return self.app.state.runtime

    async def publish(self, spec: TopicSpec, event: Event, incident_id: str, envelope: Envelope | None = None) -> Envelope:
        envelope = envelope or make_envelope(
            event, source="test", subject=incident_id, occurred_at=self.clock.now(),
            correlation_id=correlation_for(incident_id),
        )
        await self.runtime.broker.publish(
            envelope.encode(), self.runtime.topic(spec), key=envelope.key(), headers=envelope.headers()
        )
        return envelope

    async def classify(self, incident_id: str, category: Category, urgency: Urgency, grid: str = GRID) -> Envelope:
        event = IncidentClassified(
            incident_id=incident_id, grid_id=grid, category=category, urgency=urgency, priority=2,
            confidence=0.9, classifier_version="test",
        )
        return await self.publish(CLASSIFICATION_DECISIONS, event, incident_id)

    async def outbox(self, event_type: str | None = None) -> list[Envelope]:
        table = self.runtime.tables[0]
        async with self.runtime.engine.connect() as conn:
            rows = (await conn.execute(select(table.c.payload).order_by(table.c.id))).all()
        envelopes = [CATALOGUE.decode(bytes(r.payload)) for r in rows]
        return [e for e in envelopes if event_type is None or e.type == event_type]

    async def handoffs(self, incident_id: str) -> list[dict]:
        response = await self.http.get(f"/api/v1/incidents/{incident_id}/handoffs")
        assert response.status_code == 200, response.text
        return response.json()["handoffs"]

    async def handoff_of(self, incident_id: str, unit_id: str) -> dict:
        return next(h for h in await self.handoffs(incident_id) if h["unit_id"] == unit_id and h["state"] == "dispatched")


@asynccontextmanager
async def running_routing(database_url: str, clock: FakeClock | None = None, **options: object) -> AsyncIterator[Harness]:
    """The routing app on a database, with the in-memory broker and an HTTP client."""
    clock = clock or FakeClock()
    settings = RoutingSettings(database_url=database_url, log_json=False, outbox_poll_seconds=30, **options)
    app = create_app(settings, clock=clock)
    async with TestKafkaBroker(app.state.runtime.broker):
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://routing", auth=SignedAsActor(app)) as http:
                yield Harness(app, clock, http)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_routing(f"sqlite+aiosqlite:///{tmp_path / 'routing.db'}") as running:
        yield running


def new_incident() -> str:
    return str(uuid.uuid4())


async def test_classified_event_dispatches_one_handoff_per_unit_with_the_report_due(harness: Harness) -> None:
    incident = new_incident()
    cause = await harness.classify(incident, Category.FIRE, Urgency.URGENT)
    dispatched = await harness.outbox("HandoffDispatched")
    assert [(e.data.unit_id, e.data.role.value) for e in dispatched] == [
        ("U-FIRE_RESCUE-D01", "lead"), ("U-POL-P0001", "co_operating"), ("U-HEALTH-D01", "co_operating"),
    ]
    for envelope in dispatched:
        assert envelope.data.dispatched_at == harness.clock.now()
        assert envelope.data.report_due_at == harness.clock.now() + timedelta(minutes=15)
        assert envelope.policy_version == "practice-2026.1"
        assert envelope.causation_id == cause.id and envelope.correlation_id == correlation_for(incident)
        assert envelope.subject == incident


async def test_general_incident_gets_the_two_hour_report_deadline(harness: Harness) -> None:
    incident = new_incident()
    await harness.classify(incident, Category.NOISE, Urgency.GENERAL)
    due = {e.data.report_due_at for e in await harness.outbox("HandoffDispatched")}
    assert due == {harness.clock.now() + timedelta(hours=2)}


async def test_duplicate_event_delivery_and_a_second_classification_dispatch_once(harness: Harness) -> None:
    incident = new_incident()
    envelope = await harness.classify(incident, Category.THEFT, Urgency.URGENT)
    await harness.publish(CLASSIFICATION_DECISIONS, envelope.data, incident, envelope=envelope)
    await harness.classify(incident, Category.THEFT, Urgency.URGENT)  # same facts, new event id
    assert len(await harness.outbox("HandoffDispatched")) == 1
    assert len(await harness.handoffs(incident)) == 1


async def test_acknowledge_over_http_then_twice_returns_the_same_result(harness: Harness) -> None:
    incident = new_incident()
    await harness.classify(incident, Category.THEFT, Urgency.URGENT)
    handoff = await harness.handoff_of(incident, "U-POL-P0001")
    harness.clock.advance(timedelta(minutes=20))
    first = await harness.http.post(f"/api/v1/handoffs/{handoff['handoff_id']}/acknowledge", json={"actor_id": "P0001"})
    assert first.status_code == 200, first.text
    assert first.json()["state"] == "acknowledged" and first.json()["late"] is True
    harness.clock.advance(60)
    again = await harness.http.post(f"/api/v1/handoffs/{handoff['handoff_id']}/acknowledge", json={"actor_id": "A00011"})
    assert again.status_code == 200
    assert again.json() == first.json()
    acks = await harness.outbox("HandoffAcknowledged")
    assert len(acks) == 1 and acks[0].data.late and acks[0].data.actor_id == "P0001"


async def test_unauthorised_acknowledgement_is_403_with_an_audit_row(harness: Harness) -> None:
    incident = new_incident()
    await harness.classify(incident, Category.THEFT, Urgency.URGENT)
    handoff = await harness.handoff_of(incident, "U-POL-P0001")
    response = await harness.http.post(
        f"/api/v1/handoffs/{handoff['handoff_id']}/acknowledge", json={"actor_id": "P0002"}
    )
    assert response.status_code == 403
    assert "not a member of unit U-POL-P0001" in response.json()["detail"]
    assert await harness.outbox("HandoffAcknowledged") == []
    async with harness.runtime.engine.connect() as conn:
        rows = (await conn.execute(select(audit_log))).all()
    assert [(r.actor, r.action, r.handoff, r.allowed) for r in rows] == [
        ("P0002", "acknowledge", handoff["handoff_id"], False)
    ]
    assert "not a member" in rows[0].reason


async def test_resolve_before_acknowledge_is_409_and_after_it_emits_role_and_disposition(harness: Harness) -> None:
    incident = new_incident()
    await harness.classify(incident, Category.NEIGHBOUR_DISPUTE, Urgency.GENERAL)
    handoff = await harness.handoff_of(incident, "U-POL-P0001")
    url = f"/api/v1/handoffs/{handoff['handoff_id']}"
    body = {"actor_id": "P0001", "disposition": "resolved", "note": "mediated on the stairs"}
    early = await harness.http.post(f"{url}/resolve", json=body)
    assert early.status_code == 409 and "not been acknowledged" in early.json()["detail"]
    assert (await harness.http.post(f"{url}/on-scene", json={"actor_id": "P0001"})).status_code == 200
    done = await harness.http.post(f"{url}/resolve", json=body)
    assert done.status_code == 200 and done.json()["state"] == "resolved"
    assert (await harness.http.post(f"{url}/resolve", json=body)).json() == done.json()
    resolved = await harness.outbox("HandoffResolved")
    assert [(e.data.role.value, e.data.disposition.value) for e in resolved] == [("lead", "resolved")]
    assert len(await harness.outbox("HandoffAcknowledged")) == 1  # arriving counted as reporting
    assert len(await harness.outbox("ResponderOnScene")) == 1
    late = await harness.http.post(f"{url}/decline", json={"actor_id": "P0001", "reason_code": "no_capacity"})
    assert late.status_code == 409


async def test_decline_over_http_reroutes_with_the_remaining_budget(harness: Harness) -> None:
    incident = new_incident()
    await harness.classify(incident, Category.THEFT, Urgency.GENERAL)
    handoff = await harness.handoff_of(incident, "U-POL-P0001")
    harness.clock.advance(timedelta(minutes=45))
    url = f"/api/v1/handoffs/{handoff['handoff_id']}/decline"
    missing = await harness.http.post(url, json={"actor_id": "P0001"})
    assert missing.status_code == 422  # the reason code is mandatory
    response = await harness.http.post(url, json={"actor_id": "P0001", "reason_code": "no_capacity"})
    assert response.status_code == 200, response.text
    assert (await harness.http.post(url, json={"actor_id": "P0001", "reason_code": "no_capacity"})).json() == response.json()
    successor_id = response.json()["successor_handoff_id"]
    successor = (await harness.http.get(f"/api/v1/handoffs/{successor_id}")).json()
    assert successor["unit_id"] == "U-DESK-S0101"
    assert successor["report_due_at"] == handoff["report_due_at"]
    assert successor["bounce_count"] == 1 and successor["seconds_left"] == 75 * 60
    assert len(await harness.outbox("HandoffDeclined")) == 1
    assert len(await harness.outbox("HandoffDispatched")) == 2
    queue = (await harness.http.get("/api/v1/units/U-DESK-S0101/queue")).json()["handoffs"]
    assert [h["handoff_id"] for h in queue] == [successor_id]


async def test_reassign_by_a_dispatcher_keeps_the_due_and_refuses_others(harness: Harness) -> None:
    incident = new_incident()
    await harness.classify(incident, Category.ENVIRONMENT, Urgency.GENERAL)
    handoff = await harness.handoff_of(incident, "U-URBAN_MANAGEMENT-D01")
    url = f"/api/v1/handoffs/{handoff['handoff_id']}/reassign"
    refused = await harness.http.post(url, json={"actor_id": "P0001", "to_unit_id": "U-HOUSING-D01"})
    assert refused.status_code == 403
    moved = await harness.http.post(url, json={"actor_id": "cmd-D01-2", "to_unit_id": "U-HOUSING-D01", "reason": "a building"})
    assert moved.status_code == 200, moved.text
    reassigned = await harness.outbox("HandoffReassigned")
    assert [(e.data.from_unit_id, e.data.to_unit_id) for e in reassigned] == [("U-URBAN_MANAGEMENT-D01", "U-HOUSING-D01")]
    new = (await harness.http.get(f"/api/v1/handoffs/{reassigned[0].data.new_handoff_id}")).json()
    assert new["report_due_at"] == handoff["report_due_at"] and new["role"] == "lead"


async def test_breach_escalates_to_the_duty_desk_then_the_command_centre(harness: Harness) -> None:
    incident = new_incident()
    await harness.classify(incident, Category.THEFT, Urgency.URGENT)
    handoff = await harness.handoff_of(incident, "U-POL-P0001")

    async def breach(handoff_id: str, unit_id: str) -> None:
        harness.clock.advance(timedelta(minutes=15))
        await harness.publish(SLA_DEADLINES, DeadlineBreached(
            incident_id=incident, deadline_id=f"report:{handoff_id}", handoff_id=handoff_id, kind=DeadlineKind.REPORT,
            due_at=harness.clock.now(), urgency=Urgency.URGENT, unit_id=unit_id, fired_at=harness.clock.now(),
        ), incident)

    await breach(handoff["handoff_id"], "U-POL-P0001")
    escalated = await harness.outbox("IncidentEscalated")
    assert [(e.data.level, e.data.unit_id) for e in escalated] == [(1, "U-DESK-S0101")]
    desk = await harness.handoff_of(incident, "U-DESK-S0101")
    assert desk["role"] == "escalation" and desk["escalation_level"] == 1
    assert desk["report_due_at"] == (harness.clock.now() + timedelta(minutes=15)).isoformat()

    await breach(desk["handoff_id"], "U-DESK-S0101")
    escalated = await harness.outbox("IncidentEscalated")
    assert [(e.data.level, e.data.unit_id) for e in escalated] == [(1, "U-DESK-S0101"), (2, "U-CMD-D01")]
    assert (await harness.http.get(f"/api/v1/handoffs/{desk['handoff_id']}")).json()["state"] == "released"

    # The officer reports late after all: recorded, and the command centre's chase stands down.
    ack = await harness.http.post(f"/api/v1/handoffs/{handoff['handoff_id']}/acknowledge", json={"actor_id": "P0001"})
    assert ack.json()["late"] is True
    assert (await harness.http.get("/api/v1/units/U-CMD-D01/queue")).json()["handoffs"] == []
    await breach(handoff["handoff_id"], "U-POL-P0001")  # a late duplicate breach of an acknowledged handoff
    assert len(await harness.outbox("IncidentEscalated")) == 2


async def test_closed_incident_stops_escalation_and_reopen_redispatches_the_lead(harness: Harness) -> None:
    incident = new_incident()
    await harness.classify(incident, Category.NOISE, Urgency.GENERAL)
    lead = await harness.handoff_of(incident, "U-URBAN_MANAGEMENT-D01")
    await harness.publish(CLOSURE_OUTCOMES, IncidentClosed(
        incident_id=incident, outcome=ClosureOutcome.CLOSED_UNRESOLVED, closed_at=harness.clock.now()), incident)
    assert {h["state"] for h in await harness.handoffs(incident)} == {"released"}
    await harness.publish(SLA_DEADLINES, DeadlineBreached(
        incident_id=incident, deadline_id="d1", handoff_id=lead["handoff_id"], kind=DeadlineKind.REPORT,
        due_at=harness.clock.now(), urgency=Urgency.GENERAL, fired_at=harness.clock.now()), incident)
    assert await harness.outbox("IncidentEscalated") == []

    harness.clock.advance(timedelta(hours=5))
    await harness.publish(CLOSURE_OUTCOMES, IncidentReopened(
        incident_id=incident, reason="not satisfied", reopen_count=1, reopened_at=harness.clock.now()), incident)
    again = await harness.handoff_of(incident, "U-URBAN_MANAGEMENT-D01")
    assert again["handoff_id"] != lead["handoff_id"] and again["role"] == "lead"
    assert again["report_due_at"] == (harness.clock.now() + timedelta(hours=2)).isoformat()


async def test_reclassification_to_urgent_tightens_the_open_deadlines(harness: Harness) -> None:
    incident = new_incident()
    await harness.classify(incident, Category.NOISE, Urgency.GENERAL)
    harness.clock.advance(timedelta(minutes=10))
    await harness.publish(CLASSIFICATION_DECISIONS, IncidentReclassified(
        incident_id=incident, grid_id=GRID, category=Category.NOISE, urgency=Urgency.URGENT,
        previous_category=Category.NOISE, previous_urgency=Urgency.GENERAL, reason="a fight started",
        actor_id="cmd-D01-1"), incident)
    open_now = [h for h in await harness.handoffs(incident) if h["state"] == "dispatched"]
    assert len(open_now) == 2
    assert {h["report_due_at"] for h in open_now} == {(harness.clock.now() + timedelta(minutes=15)).isoformat()}
    assert len(await harness.outbox("HandoffReleased")) == 2


async def test_metrics_count_dispatches_declines_and_escalations(harness: Harness) -> None:
    incident = new_incident()
    await harness.classify(incident, Category.FIRE, Urgency.URGENT)
    text = (await harness.http.get("/metrics")).text
    assert 'gridwhistle_routing_handoffs_dispatched_total{department="fire_rescue",role="lead"} 1.0' in text
    assert 'gridwhistle_routing_handoffs_dispatched_total{department="police",role="co_operating"} 1.0' in text
    health = await harness.handoff_of(incident, "U-HEALTH-D01")
    await harness.http.post(f"/api/v1/handoffs/{health['handoff_id']}/decline",
                            json={"actor_id": "health-D01-2", "reason_code": "not_our_jurisdiction"})
    officer = await harness.handoff_of(incident, "U-POL-P0001")
    await harness.publish(SLA_DEADLINES, DeadlineBreached(
        incident_id=incident, deadline_id="d1", handoff_id=officer["handoff_id"], kind=DeadlineKind.REPORT,
        due_at=harness.clock.now(), urgency=Urgency.URGENT, fired_at=harness.clock.now()), incident)
    text = (await harness.http.get("/metrics")).text
    assert 'gridwhistle_routing_declines_total{reason="not_our_jurisdiction"} 1.0' in text
    assert 'gridwhistle_routing_escalations_total{level="1"} 1.0' in text
    assert 'gridwhistle_routing_handoffs_dispatched_total{department="police",role="escalation"} 1.0' in text


async def test_unit_view_lists_members(harness: Harness) -> None:
    unit = (await harness.http.get("/api/v1/units/U-POL-P0001")).json()
    assert unit["kind"] == "community_police" and "P0001" in unit["members"]
    assert (await harness.http.get("/api/v1/units/U-NOPE")).status_code == 404
    assert (await harness.http.get("/api/v1/handoffs/nope")).status_code == 404


def test_bad_reference_data_fails_at_start_with_the_row_named(tmp_path: Path) -> None:
    document = demo_city(grids=20, officers=6, stations_per_district=1).model_dump(mode="json")
    document["grids"][2]["officer_id"] = "P-GHOST"
    del document["units"][1]["district_id"]
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    settings = RoutingSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'r.db'}", reference_data=str(path))
    with pytest.raises(ReferenceDataError) as error:
        create_app(settings)
    assert f"units[1] ({document['units'][1]['id']}): district_id: Field required" in str(error.value)
