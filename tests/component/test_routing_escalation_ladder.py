"""Routing through its wiring: the ladder to the top and its repeats, stale deadline signals, recorded data versions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from contracts.reference import demo_city
from contracts.vocabulary import Category, Urgency
from tests.component.test_routing_duty_and_queues import signal
from tests.component.test_routing_service import Harness, new_incident, running_routing


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_routing(f"sqlite+aiosqlite:///{tmp_path / 'routing.db'}", escalate_on_warning={}) as running:
        yield running


async def open_rung(harness: Harness, incident: str) -> dict:
    """The one escalation handoff still waiting for a report."""
    rungs = [h for h in await harness.handoffs(incident) if h["role"] == "escalation" and h["state"] == "dispatched"]
    assert len(rungs) == 1, rungs
    return rungs[0]


async def test_the_ladder_climbs_to_the_command_centre_and_repeats_at_the_top_until_the_cap(harness: Harness) -> None:
    incident = new_incident()
    await harness.classify(incident, Category.THEFT, Urgency.URGENT)
    breached = await harness.handoff_of(incident, "U-POL-P0001")
    for _ in range(6):  # the officer, the desk, the command centre, then its three repeats (max_escalation_repeats=3)
        harness.clock.advance(timedelta(minutes=15))
        await signal(harness, incident, breached)
        breached = await open_rung(harness, incident)  # the rung raised now (after the cap: the last one)
    escalated = await harness.outbox("IncidentEscalated")
    assert [(e.data.level, e.data.unit_id) for e in escalated] == [
        (1, "U-DESK-S0101"), (2, "U-CMD-D01"), (2, "U-CMD-D01"), (2, "U-CMD-D01"), (2, "U-CMD-D01"),
    ]
    assert [e.data.reason.split(" (")[-1] for e in escalated[2:]] == [
        "repeat 1 of 3 at the top level)", "repeat 2 of 3 at the top level)", "repeat 3 of 3 at the top level)",
    ]
    handoffs = await harness.handoffs(incident)
    rungs = [h for h in handoffs if h["role"] == "escalation"]
    assert [(h["unit_id"], h["escalation_level"], h["escalation_repeat"]) for h in rungs] == [
        ("U-DESK-S0101", 1, 0), ("U-CMD-D01", 2, 0), ("U-CMD-D01", 2, 1), ("U-CMD-D01", 2, 2), ("U-CMD-D01", 2, 3),
    ]
    # One open rung at a time, and the last one stays in the command centre's queue after the cap is spent.
    assert [h["state"] for h in rungs] == ["released"] * 4 + ["dispatched"]
    queue = (await harness.http.get("/api/v1/command-centres/D01/queue")).json()["handoffs"]
    assert [(h["handoff_id"], h["why"]) for h in queue] == [(rungs[-1]["handoff_id"], "escalated")]
    lead = next(h for h in handoffs if h["role"] == "lead")
    assert (lead["unit_id"], lead["state"]) == ("U-POL-P0001", "dispatched"), "the ladder never takes the lead (首接负责)"
    text = (await harness.http.get("/metrics")).text
    assert 'gridwhistle_routing_escalations_total{level="2"} 4.0' in text


async def test_a_breach_or_warning_of_a_handoff_reported_in_time_is_ignored_and_counted(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'stale.db'}"
    async with running_routing(url, escalate_on_warning={"urgent": 0.8}) as harness:
        incident = new_incident()
        await harness.classify(incident, Category.THEFT, Urgency.URGENT)
        officer = await harness.handoff_of(incident, "U-POL-P0001")
        harness.clock.advance(timedelta(minutes=14))  # reported with a minute to spare
        ack = await harness.http.post(f"/api/v1/handoffs/{officer['handoff_id']}/acknowledge", json={"actor_id": "P0001"})
        assert ack.status_code == 200 and ack.json()["late"] is False
        # sla_timer had not consumed the acknowledgement yet when its timers fired.
        harness.clock.advance(timedelta(minutes=2))
        await signal(harness, incident, officer, fraction=0.8)
        await signal(harness, incident, officer)
        assert await harness.outbox("IncidentEscalated") == []
        assert [h["role"] for h in await harness.handoffs(incident)] == ["lead"]
        text = (await harness.http.get("/metrics")).text
        assert 'gridwhistle_routing_stale_breaches_ignored_total{signal="breach"} 1.0' in text
        assert 'gridwhistle_routing_stale_breaches_ignored_total{signal="warning"} 1.0' in text

        # A late report is not a stale breach: nothing to chase either, and nothing counted.
        other = new_incident()
        await harness.classify(other, Category.THEFT, Urgency.URGENT)
        late = await harness.handoff_of(other, "U-POL-P0001")
        harness.clock.advance(timedelta(minutes=16))
        await harness.http.post(f"/api/v1/handoffs/{late['handoff_id']}/acknowledge", json={"actor_id": "P0001"})
        await signal(harness, other, late)
        assert await harness.outbox("IncidentEscalated") == []
        text = (await harness.http.get("/metrics")).text
        assert 'gridwhistle_routing_stale_breaches_ignored_total{signal="breach"} 1.0' in text


async def test_every_dispatch_records_the_reference_data_and_roster_versions(harness: Harness, tmp_path: Path) -> None:
    incident = new_incident()
    await harness.classify(incident, Category.FIRE, Urgency.URGENT)
    dispatched = await harness.outbox("HandoffDispatched")
    assert {(e.data.reference_version, e.data.roster_version) for e in dispatched} == {
        ("demo-city-2026-860g-320p", "demo-roster-2026.2")
    }
    health = await harness.handoff_of(incident, "U-HEALTH-D01")
    assert (health["reference_version"], health["roster_version"]) == ("demo-city-2026-860g-320p", "demo-roster-2026.2")
    # A re-route is a routing decision too.
    await harness.http.post(f"/api/v1/handoffs/{health['handoff_id']}/decline",
                            json={"actor_id": "health-D01-1", "reason_code": "no_capacity"})
    assert (await harness.outbox("HandoffDispatched"))[-1].data.reference_version == "demo-city-2026-860g-320p"

    document = demo_city(grids=20, officers=6, stations_per_district=1).model_dump(mode="json")
    document["version"], document["roster"] = "city-edit-7", None
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    async with running_routing(f"sqlite+aiosqlite:///{tmp_path / 'edited.db'}", reference_data=str(path)) as edited:
        await edited.classify(new_incident(), Category.THEFT, Urgency.URGENT)
        [only] = await edited.outbox("HandoffDispatched")
        assert (only.data.reference_version, only.data.roster_version) == ("city-edit-7", None)
