"""Every console action through its API: checked against the signed-in user, forwarded as them or refused.

The owners' APIs are the recording fake of test_console_api.py; a refused action never reaches them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from contracts.events import (
    DeadlineBreached,
    HandoffAcknowledged,
    HandoffDispatched,
    HandoffResolved,
    IncidentEscalatedToCommandCentre,
    IncidentResolved,
)
from contracts.vocabulary import Category, DeadlineKind, Disposition, HandoffRole, Urgency
from services.runtime.clock import FakeClock
from tests.component.test_console_api import HOME_GRID, Harness, no_figures, running_console

ROUTING = "http://127.0.0.1:8002"
CLOSURE = "http://127.0.0.1:8004"
CLASSIFICATION = "http://127.0.0.1:8001"
OTHER_STATION_GRID = "G0073"  # station S0102 of district D01, grid worker W0073, officer unit U-POL-P0002
WITH_HEALTH = (("U-POL-P0001", "police", HandoffRole.LEAD), ("U-HEALTH-D01", "health", HandoffRole.CO_OPERATING))


@pytest.fixture
async def console(tmp_path) -> AsyncIterator[Harness]:
    async with running_console(tmp_path) as harness:
        yield harness


async def resolved_incident(console: Harness, grid_id: str = HOME_GRID) -> str:
    """An incident whose lead resolved: closure's IncidentResolved has reached the console."""
    units = (("U-POL-P0001" if grid_id == HOME_GRID else "U-POL-P0002", "police", HandoffRole.LEAD),)
    incident_id, (handoff_id,) = await console.whistle(grid_id, units=units)
    now = console.clock.advance(timedelta(hours=1))
    await console.publish(
        HandoffResolved(incident_id=incident_id, handoff_id=handoff_id, unit_id=units[0][0], role=HandoffRole.LEAD,
                        actor_id="P0001", disposition=Disposition.RESOLVED, resolved_at=now),
        incident_id,
    )
    await console.publish(IncidentResolved(incident_id=incident_id, disposition=Disposition.RESOLVED, resolved_at=now), incident_id)
    return incident_id


# --- grid worker and supervisor: verification (核查) and feedback (回访) ----------------------------


async def test_the_grid_worker_verifies_and_gives_feedback_on_their_own_grid_as_themselves(console: Harness):
    incident_id = await resolved_incident(console)
    worker = await console.as_user("W0001")
    verified = await console.http.post(
        f"/api/v1/incidents/{incident_id}/verification",
        json={"confirmed": False, "reason": "杂物还在", "actor_id": "someone-else"}, headers=worker,
    )
    assert verified.status_code == 200, verified.text
    feedback = await console.http.post(
        f"/api/v1/incidents/{incident_id}/feedback", json={"satisfaction": "basically_satisfied", "comment": "还行"},
        headers=worker,
    )
    assert feedback.status_code == 200, feedback.text
    assert console.forwarded[0][:2] == (
        f"{CLOSURE}/api/v1/incidents/{incident_id}/verification",
        {"actor_id": "W0001", "confirmed": False, "reason": "杂物还在"},
    )
    assert console.forwarded[1][:2] == (
        f"{CLOSURE}/api/v1/incidents/{incident_id}/feedback",
        {"actor_id": "W0001", "satisfaction": "basically_satisfied", "comment": "还行"},
    )
    # The owner checks the user's own token again (the same one the console accepted).
    assert [headers["authorization"] for _, _, headers in console.forwarded] == [worker["Authorization"]] * 2


async def test_another_grids_worker_and_dispatchers_may_not_verify_or_give_feedback(console: Harness):
    incident_id = await resolved_incident(console)
    for path, body in (("verification", {"confirmed": True}), ("feedback", {"satisfaction": "satisfied"})):
        other_grid = await console.http.post(
            f"/api/v1/incidents/{incident_id}/{path}", json=body, headers=await console.as_user("W0073")
        )
        assert other_grid.status_code == 404  # not theirs: not even confirmed to exist
        dispatcher = await console.http.post(
            f"/api/v1/incidents/{incident_id}/{path}", json=body, headers=await console.as_user("desk-S0101-1")
        )
        assert dispatcher.status_code == 403
    assert console.forwarded == []


async def test_a_supervisor_verifies_any_grid_as_themselves_but_gives_no_feedback(console: Harness):
    incident_id = await resolved_incident(console, OTHER_STATION_GRID)
    supervisor = await console.as_user("sup-1")
    verified = await console.http.post(
        f"/api/v1/incidents/{incident_id}/verification", json={"confirmed": True}, headers=supervisor
    )
    assert verified.status_code == 200, verified.text
    assert console.forwarded[0][:2] == (
        f"{CLOSURE}/api/v1/incidents/{incident_id}/verification", {"actor_id": "sup-1", "confirmed": True, "reason": ""}
    )
    feedback = await console.http.post(
        f"/api/v1/incidents/{incident_id}/feedback", json={"satisfaction": "satisfied"}, headers=supervisor
    )
    assert feedback.status_code == 403
    assert len(console.forwarded) == 1


# --- responders: decline, on scene, resolve -------------------------------------------------------


async def test_decline_is_forwarded_with_its_reason_code_and_text_and_refused_without_a_valid_code(console: Harness):
    _, (handoff_id, health_handoff) = await console.whistle(HOME_GRID, units=WITH_HEALTH)
    officer = await console.as_user("P0001")
    path = f"/api/v1/handoffs/{handoff_id}/decline"
    assert (await console.http.post(path, json={"reason_text": "x"}, headers=officer)).status_code == 422
    assert (await console.http.post(path, json={"reason_code": "busy"}, headers=officer)).status_code == 422
    declined = await console.http.post(
        path, json={"reason_code": "not_our_area", "reason_text": "该地址属于相邻网格"}, headers=officer
    )
    assert declined.status_code == 200
    other_unit = await console.http.post(
        f"/api/v1/handoffs/{health_handoff}/decline", json={"reason_code": "no_capacity"}, headers=officer
    )
    assert other_unit.status_code == 404  # the officer does not see health's handoff at all
    assert [(url, body) for url, body, _ in console.forwarded] == [
        (f"{ROUTING}{path}", {"actor_id": "P0001", "reason_code": "not_our_area", "reason_text": "该地址属于相邻网格"})
    ]


async def test_on_scene_and_resolve_with_disposition_and_note_are_forwarded_for_the_units_members(console: Harness):
    _, (handoff_id, health_handoff) = await console.whistle(HOME_GRID, units=WITH_HEALTH)
    auxiliary = await console.as_user("A00011")  # an auxiliary of the officer's unit
    assert (await console.http.post(f"/api/v1/handoffs/{handoff_id}/on-scene", headers=auxiliary)).status_code == 200
    bad = await console.http.post(f"/api/v1/handoffs/{handoff_id}/resolve", json={"disposition": "done"}, headers=auxiliary)
    assert bad.status_code == 422
    resolved = await console.http.post(
        f"/api/v1/handoffs/{handoff_id}/resolve", json={"disposition": "referred", "note": "已移交司法所调解"},
        headers=auxiliary,
    )
    assert resolved.status_code == 200
    health = await console.as_user("health-D01-1")
    refused = await console.http.post(f"/api/v1/handoffs/{handoff_id}/on-scene", headers=health)
    assert refused.status_code == 404
    dispatcher = await console.as_user("desk-S0101-1")  # sees the handoff, is not of its unit
    assert (await console.http.post(f"/api/v1/handoffs/{health_handoff}/on-scene", headers=dispatcher)).status_code == 403
    assert [(url, body) for url, body, _ in console.forwarded] == [
        (f"{ROUTING}/api/v1/handoffs/{handoff_id}/on-scene", {"actor_id": "A00011"}),
        (f"{ROUTING}/api/v1/handoffs/{handoff_id}/resolve",
         {"actor_id": "A00011", "disposition": "referred", "note": "已移交司法所调解"}),
    ]


# --- dispatchers: reclassify and reassign -----------------------------------------------------------


async def test_reclassify_is_forwarded_for_the_areas_dispatcher_and_refused_to_others(console: Harness):
    incident_id, _ = await console.whistle(HOME_GRID)
    body = {"category": "neighbour_dispute", "urgency": "general", "reason": "双方已分开，属邻里纠纷"}
    path = f"/api/v1/incidents/{incident_id}/reclassify"
    assert (await console.http.post(path, json=body, headers=await console.as_user("P0001"))).status_code == 403
    assert (await console.http.post(path, json=body, headers=await console.as_user("W0001"))).status_code == 403
    assert (await console.http.post(path, json=body, headers=await console.as_user("desk-S0102-1"))).status_code == 404
    no_reason = await console.http.post(path, json={**body, "reason": ""}, headers=await console.as_user("cmd-D01-1"))
    assert no_reason.status_code == 422
    assert console.forwarded == []
    ok = await console.http.post(path, json=body, headers=await console.as_user("cmd-D01-1"))
    assert ok.status_code == 200
    (url, forwarded, _), = console.forwarded
    assert (url, forwarded) == (f"{CLASSIFICATION}{path}", {"actor_id": "cmd-D01-1", **body})


async def test_reassign_is_forwarded_for_the_areas_dispatcher_and_refused_to_the_units_own_members(console: Harness):
    _, (handoff_id,) = await console.whistle(HOME_GRID)
    body = {"to_unit_id": "U-POL-P0002", "reason": "P0001 休假"}
    path = f"/api/v1/handoffs/{handoff_id}/reassign"
    assert (await console.http.post(path, json=body, headers=await console.as_user("P0001"))).status_code == 403
    assert (await console.http.post(path, json=body, headers=await console.as_user("sup-1"))).status_code == 403
    assert console.forwarded == []
    ok = await console.http.post(path, json=body, headers=await console.as_user("desk-S0101-1"))
    assert ok.status_code == 200
    (url, forwarded, _), = console.forwarded
    assert (url, forwarded) == (f"{ROUTING}{path}", {"actor_id": "desk-S0101-1", **body})


# --- the queue: filters and groups ----------------------------------------------------------------


async def test_queue_filters_combine_and_groups_follow_queue_order(console: Harness):
    district = await console.as_user("cmd-D01-1")
    home_urgent, (_, health_handoff) = await console.whistle(HOME_GRID, units=WITH_HEALTH)
    home_general, _ = await console.whistle(HOME_GRID, urgency=Urgency.GENERAL, category=Category.NOISE,
                                            report_in=timedelta(hours=2))
    other_station, _ = await console.whistle(
        OTHER_STATION_GRID, units=(("U-POL-P0002", "police", HandoffRole.LEAD),), report_in=timedelta(minutes=10)
    )
    await console.publish(
        HandoffAcknowledged(incident_id=home_urgent, handoff_id=health_handoff, unit_id="U-HEALTH-D01",
                            actor_id="health-D01-1", acknowledged_at=console.clock.now()),
        home_urgent,
    )

    async def ids(**params: str) -> list[str]:
        answer = await console.http.get("/api/v1/queue", params=params, headers=district)
        assert answer.status_code == 200, answer.text
        return [item["incident_id"] for item in answer.json()["items"]]

    assert await ids() == [other_station, home_urgent, home_general]
    assert await ids(station_id="S0101") == [home_urgent, home_general]
    assert await ids(department="health") == [home_urgent]
    assert await ids(urgency="general") == [home_general]
    assert await ids(status="acknowledged") == [home_urgent]
    assert await ids(station_id="S0101", urgency="urgent", department="police") == [home_urgent]
    assert await ids(district_id="D02") == []
    assert (await console.http.get("/api/v1/queue", params={"urgency": "soon"}, headers=district)).status_code == 422

    by_station = (await console.http.get("/api/v1/queue", params={"group_by": "station"}, headers=district)).json()
    assert [(g["key"], g["incident_ids"]) for g in by_station["groups"]] == [
        ("S0102", [other_station]), ("S0101", [home_urgent, home_general]),
    ]
    assert all(g["name"] and g["name"] != g["key"] for g in by_station["groups"])
    by_department = (await console.http.get(
        "/api/v1/queue", params={"group_by": "department", "station_id": "S0101"}, headers=district
    )).json()
    assert {g["key"]: g["incident_ids"] for g in by_department["groups"]} == {
        "police": [home_urgent, home_general], "health": [home_urgent],
    }
    item = by_department["items"][0]
    assert item["group_keys"] == {"station": ["S0101"], "district": ["D01"], "department": ["health", "police"]}


async def test_a_responders_filters_see_only_their_own_handoffs_departments(console: Harness):
    incident_id, _ = await console.whistle(HOME_GRID, units=WITH_HEALTH)
    health = await console.as_user("health-D01-1")
    mine = (await console.http.get("/api/v1/queue", params={"department": "health"}, headers=health)).json()
    assert [i["incident_id"] for i in mine["items"]] == [incident_id]
    theirs = (await console.http.get("/api/v1/queue", params={"department": "police"}, headers=health)).json()
    assert theirs["items"] == []  # the police handoff is not shown to health, so it cannot be filtered on


# --- the command centre takes over at the reopen cap ----------------------------------------------


async def test_an_escalation_at_the_reopen_cap_shows_on_the_item_and_reaches_the_command_centre(console: Harness):
    incident_id = await resolved_incident(console)
    now = console.clock.advance(timedelta(hours=2))
    await console.publish(
        IncidentEscalatedToCommandCentre(incident_id=incident_id, grid_id=HOME_GRID, reopen_count=2,
                                         reason="reporter not satisfied", escalated_at=now),
        incident_id,
    )
    await console.publish(
        HandoffDispatched(incident_id=incident_id, handoff_id="cmd-lead", unit_id="U-CMD-D01", department="command",
                          role=HandoffRole.LEAD, category=Category.VIOLENCE, urgency=Urgency.URGENT, grid_id=HOME_GRID,
                          dispatched_at=now, report_due_at=now + timedelta(minutes=15)),
        incident_id,
    )
    queue = (await console.http.get("/api/v1/queue", headers=await console.as_user("cmd-D01-1"))).json()
    (item,) = [i for i in queue["items"] if i["incident_id"] == incident_id]
    assert item["command_centre_at"] == now.isoformat()
    assert item["status"] == "dispatched" and item["resolved_at"] is None
    assert "U-CMD-D01" in [h["unit_id"] for h in item["handoffs"] if h["state"] == "dispatched"]
    detail = (await console.http.get(f"/api/v1/incidents/{incident_id}", headers=await console.as_user("W0001"))).json()
    assert "IncidentEscalatedToCommandCentre" in [e["event_type"] for e in detail["timeline"]]


# --- time zones ---------------------------------------------------------------------------------


async def test_the_supervisors_day_starts_at_midnight_of_the_asked_time_zone(tmp_path):
    # 03:00 UTC on 2 March: 22:00 on 1 March in New York, 11:00 on 2 March in Shanghai.
    clock = FakeClock(datetime(2026, 3, 2, 3, 0, tzinfo=UTC))
    asked: list[httpx.URL] = []

    def reads(request: httpx.Request) -> httpx.Response:
        asked.append(request.url)
        return no_figures(request)

    async with running_console(tmp_path, clock=clock, reads=reads) as console:
        incident_id, (handoff_id,) = await console.whistle(HOME_GRID)
        fired = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # 07:00 in New York, 20:00 the day before in Shanghai
        await console.publish(
            DeadlineBreached(incident_id=incident_id, deadline_id="d1", handoff_id=handoff_id, kind=DeadlineKind.REPORT,
                             due_at=fired, urgency=Urgency.URGENT, unit_id="U-POL-P0001", fired_at=fired),
            incident_id,
        )
        supervisor = await console.as_user("sup-1")
        new_york = (await console.http.get("/api/v1/supervisor", params={"tz": "America/New_York"}, headers=supervisor)).json()
        assert new_york["day_starts_at"] == "2026-03-01T00:00:00-05:00"
        assert [b["handoff_id"] for b in new_york["breaches_today"]] == [handoff_id]
        assert new_york["breaches_today"][0]["breached_at"] == "2026-03-01T12:00:00+00:00"
        kinds = [u for u in asked if u.params.get("dimension") == "kind"]
        assert kinds[-1].params["from"] == "2026-03-01T00:00:00-05:00"  # closure counts from the same midnight
        shanghai = (await console.http.get("/api/v1/supervisor", headers=supervisor)).json()
        assert shanghai["day_starts_at"] == "2026-03-02T00:00:00+08:00"
        assert shanghai["breaches_today"] == []
        unknown = await console.http.get("/api/v1/supervisor", params={"tz": "Mars/Olympus"}, headers=supervisor)
        assert unknown.status_code == 422
