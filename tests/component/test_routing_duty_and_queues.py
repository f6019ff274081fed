"""Routing through its wiring: roster fallback, escalation on warnings, all-reported, department and command-centre queues."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contracts.events import DeadlineBreached, DeadlineWarned
from contracts.topics import SLA_DEADLINES
from contracts.vocabulary import Category, DeadlineKind, Urgency
from services.runtime.clock import FakeClock
from tests.component.test_routing_service import Harness, new_incident, running_routing

SHANGHAI_FRIDAY_10AM = datetime(2026, 1, 2, 2, 0, tzinfo=UTC)  # P0001 is off; teammate P0013 is on duty


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_routing(f"sqlite+aiosqlite:///{tmp_path / 'routing.db'}") as running:
        yield running


async def signal(harness: Harness, incident: str, handoff: dict, *, fraction: float | None = None) -> None:
    """Publish what sla_timer would: a warning at `fraction` of the window, or (no fraction) the breach."""
    common = dict(incident_id=incident, deadline_id=f"report:{handoff['handoff_id']}", handoff_id=handoff["handoff_id"],
                  kind=DeadlineKind.REPORT, due_at=datetime.fromisoformat(handoff["report_due_at"]),
                  fired_at=harness.clock.now())
    if fraction is None:
        event = DeadlineBreached(**common, urgency=Urgency(handoff["urgency"]), unit_id=handoff["unit_id"])
    else:
        event = DeadlineWarned(**common, fraction=fraction)
    await harness.publish(SLA_DEADLINES, event, incident)


async def test_off_duty_grid_officer_is_replaced_by_the_teammate_on_duty(tmp_path: Path) -> None:
    clock = FakeClock(SHANGHAI_FRIDAY_10AM)
    async with running_routing(f"sqlite+aiosqlite:///{tmp_path / 'friday.db'}", clock=clock) as friday:
        incident = new_incident()
        await friday.classify(incident, Category.THEFT, Urgency.URGENT)
        dispatched = await friday.outbox("HandoffDispatched")
        assert [(e.data.unit_id, e.data.role.value, e.data.department) for e in dispatched] == [
            ("U-POL-P0013", "lead", "police")
        ]
        assert dispatched[0].data.report_due_at == clock.now() + timedelta(minutes=15)


async def test_urgent_warning_escalates_to_the_desk_then_the_breach_to_the_command_centre(harness: Harness) -> None:
    incident = new_incident()
    await harness.classify(incident, Category.THEFT, Urgency.URGENT)
    officer = await harness.handoff_of(incident, "U-POL-P0001")
    harness.clock.advance(timedelta(minutes=12))
    await signal(harness, incident, officer, fraction=0.5)
    assert await harness.outbox("IncidentEscalated") == []
    await signal(harness, incident, officer, fraction=0.8)
    escalated = await harness.outbox("IncidentEscalated")
    assert [(e.data.level, e.data.unit_id) for e in escalated] == [(1, "U-DESK-S0101")]
    assert escalated[0].data.reason.startswith("warning: 80% of the report window")
    desk = await harness.handoff_of(incident, "U-DESK-S0101")

    harness.clock.advance(timedelta(minutes=3))
    await signal(harness, incident, officer)
    escalated = await harness.outbox("IncidentEscalated")
    assert [(e.data.level, e.data.unit_id) for e in escalated] == [(1, "U-DESK-S0101"), (2, "U-CMD-D01")]
    assert escalated[1].data.reason == "report deadline breached by unit U-POL-P0001"
    assert (await harness.http.get(f"/api/v1/handoffs/{desk['handoff_id']}")).json()["state"] == "released"
    # The desk rung's own breach, arriving later, finds it released: the ladder does not come back down.
    await signal(harness, incident, desk)
    assert len(await harness.outbox("IncidentEscalated")) == 2


async def test_general_incident_ignores_warnings_and_escalates_on_breach(harness: Harness) -> None:
    incident = new_incident()
    await harness.classify(incident, Category.NOISE, Urgency.GENERAL)
    lead = await harness.handoff_of(incident, "U-URBAN_MANAGEMENT-D01")
    await signal(harness, incident, lead, fraction=0.8)
    assert await harness.outbox("IncidentEscalated") == []
    await signal(harness, incident, lead)
    assert [(e.data.level, e.data.unit_id) for e in await harness.outbox("IncidentEscalated")] == [(1, "U-DESK-S0101")]


async def test_warning_policy_is_a_setting_per_urgency(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'policy.db'}"
    async with running_routing(url, escalate_on_warning={"general": 0.5}) as configured:
        general, urgent = new_incident(), new_incident()
        await configured.classify(general, Category.NOISE, Urgency.GENERAL)
        await configured.classify(urgent, Category.THEFT, Urgency.URGENT)
        await signal(configured, general, await configured.handoff_of(general, "U-URBAN_MANAGEMENT-D01"), fraction=0.5)
        await signal(configured, urgent, await configured.handoff_of(urgent, "U-POL-P0001"), fraction=0.8)
        assert [e.subject for e in await configured.outbox("IncidentEscalated")] == [general]


async def test_incident_says_when_every_summoned_unit_has_reported(harness: Harness) -> None:
    incident = new_incident()
    await harness.classify(incident, Category.FIRE, Urgency.URGENT)
    members = {"U-FIRE_RESCUE-D01": "fire_rescue-D01-1", "U-POL-P0001": "P0001", "U-HEALTH-D01": "health-D01-2"}
    view = (await harness.http.get(f"/api/v1/incidents/{incident}/handoffs")).json()
    assert (view["all_reported"], view["all_reported_at"]) == (False, None)
    assert sorted(view["waiting_on"]) == sorted(members)
    for unit_id, actor in members.items():
        harness.clock.advance(60)
        handoff = await harness.handoff_of(incident, unit_id)
        await harness.http.post(f"/api/v1/handoffs/{handoff['handoff_id']}/acknowledge", json={"actor_id": actor})
    view = (await harness.http.get(f"/api/v1/incidents/{incident}/handoffs")).json()
    assert view["all_reported"] is True and view["waiting_on"] == []
    assert view["all_reported_at"] == harness.clock.now().isoformat()


async def test_department_queue_lists_open_handoffs_by_time_left_and_filters_by_district(harness: Harness) -> None:
    general, urgent, elsewhere = new_incident(), new_incident(), new_incident()
    await harness.classify(general, Category.VIOLENCE, Urgency.GENERAL)
    harness.clock.advance(60)
    await harness.classify(urgent, Category.MEDICAL_EMERGENCY, Urgency.URGENT)
    await harness.classify(elsewhere, Category.VIOLENCE, Urgency.URGENT, grid="G0860")  # district D03
    queue = (await harness.http.get("/api/v1/departments/health/queue", params={"district_id": "D01"})).json()
    assert [h["incident_id"] for h in queue["handoffs"]] == [urgent, general]
    assert [h["seconds_left"] for h in queue["handoffs"]] == [15 * 60, 2 * 3600 - 60]
    everywhere = (await harness.http.get("/api/v1/departments/health/queue")).json()["handoffs"]
    assert {h["incident_id"] for h in everywhere} == {general, urgent, elsewhere}
    assert (await harness.http.get("/api/v1/departments/astrology/queue")).status_code == 404


async def test_command_centre_queue_holds_fallbacks_bounces_and_escalations_by_time_left(harness: Harness) -> None:
    unknown, bounced, escalated = new_incident(), new_incident(), new_incident()
    await harness.classify(unknown, Category.THEFT, Urgency.GENERAL, grid="G-NOWHERE")
    await harness.classify(bounced, Category.ENVIRONMENT, Urgency.URGENT)
    await harness.classify(escalated, Category.THEFT, Urgency.URGENT)
    lead = await harness.handoff_of(bounced, "U-URBAN_MANAGEMENT-D01")
    decline = {"actor_id": "urban_management-D01-1", "reason_code": "not_our_jurisdiction"}
    first = (await harness.http.post(f"/api/v1/handoffs/{lead['handoff_id']}/decline", json=decline)).json()
    await harness.http.post(f"/api/v1/handoffs/{first['successor_handoff_id']}/decline",
                            json={"actor_id": "desk-S0101-1", "reason_code": "no_capacity"})
    harness.clock.advance(timedelta(minutes=5))
    await signal(harness, escalated, await harness.handoff_of(escalated, "U-POL-P0001"), fraction=0.8)
    await signal(harness, escalated, await harness.handoff_of(escalated, "U-POL-P0001"))
    queue = (await harness.http.get("/api/v1/command-centres/D01/queue")).json()
    assert queue["unit_id"] == "U-CMD-D01"
    assert [(h["incident_id"], h["why"]) for h in queue["handoffs"]] == [
        (bounced, "bounced"), (escalated, "escalated"), (unknown, "fallback"),
    ]
    assert (await harness.http.get("/api/v1/command-centres/D99/queue")).status_code == 404
