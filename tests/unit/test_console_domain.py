"""Console rules without I/O: who a demo user is, what they may see and do, queue order, rates, tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts.reference import demo_city
from services.console.auth import TokenIssuer, password_ok
from services.console.domain import (
    Action,
    Forbidden,
    Role,
    Scope,
    authorize,
    can_see,
    incident_status,
    order_queue,
    principal_for,
    rates,
    sees_handoff,
    time_to_report_histogram,
)

CITY = demo_city()
T0 = datetime(2026, 1, 1, 8, tzinfo=UTC)
HOME = Scope("G0001", "D01", "S0101", frozenset({"U-POL-P0001", "U-HEALTH-D01"}))


def who(user_id: str):
    principal = principal_for(user_id, CITY, supervisors=("sup-1",), admins=("admin",))
    assert principal is not None
    return principal


def test_demo_users_get_their_role_and_area_from_the_reference_data():
    assert who("W0001").role is Role.GRID_WORKER and who("W0001").grid_ids == {"G0001"}
    assert who("A00011").role is Role.RESPONDER and who("A00011").unit_id == "U-POL-P0001"
    desk = who("desk-S0101-1")
    assert desk.role is Role.DISPATCHER and (desk.district_id, desk.station_id) == ("D01", "S0101")
    centre = who("cmd-D01-1")
    assert centre.role is Role.DISPATCHER and (centre.district_id, centre.station_id) == ("D01", None)
    assert who("sup-1").role is Role.SUPERVISOR
    assert principal_for("stranger", CITY, supervisors=(), admins=()) is None


def test_dispatchers_see_their_station_or_district_only():
    assert can_see(who("desk-S0101-1"), HOME) and can_see(who("cmd-D01-1"), HOME)
    assert not can_see(who("desk-S0102-1"), HOME)
    assert not can_see(who("cmd-D02-1"), HOME)


def test_responders_see_incidents_of_their_unit_and_only_their_own_handoffs():
    health = who("health-D01-1")
    assert can_see(health, HOME)
    assert sees_handoff(health, HOME, "U-HEALTH-D01") and not sees_handoff(health, HOME, "U-POL-P0001")
    assert not can_see(who("fire_rescue-D01-1"), HOME)


def test_grid_workers_see_their_grids_only():
    assert can_see(who("W0001"), HOME)
    assert not can_see(who("W0002"), HOME)


@pytest.mark.parametrize(
    ("user_id", "action", "unit"),
    [
        ("health-D01-1", Action.ACKNOWLEDGE, "U-POL-P0001"),  # another unit's handoff
        ("P0001", Action.REASSIGN, None),  # responders do not dispatch
        ("desk-S0102-1", Action.RECLASSIFY, None),  # another station
        ("cmd-D02-1", Action.ESCALATE, None),  # another district
        ("W0002", Action.VERIFY, None),  # another grid's worker
        ("desk-S0101-1", Action.REPORT, None),  # only grid workers report
        ("sup-1", Action.ACKNOWLEDGE, "U-POL-P0001"),  # supervisors watch, they do not act
    ],
)
def test_actions_outside_the_users_unit_area_or_grid_are_forbidden(user_id, action, unit):
    with pytest.raises(Forbidden):
        authorize(who(user_id), action, HOME, handoff_unit_id=unit)


def test_actions_inside_the_users_unit_area_or_grid_are_allowed():
    authorize(who("A00011"), Action.ACKNOWLEDGE, HOME, handoff_unit_id="U-POL-P0001")
    authorize(who("cmd-D01-1"), Action.ESCALATE, HOME)
    authorize(who("W0001"), Action.FEEDBACK, HOME)


def test_queue_puts_the_soonest_or_most_overdue_report_deadline_first_and_reported_items_last():
    items = [
        {"incident_id": "reported", "next_report_due_at": None, "reported_at": T0},
        {"incident_id": "general", "next_report_due_at": T0 + timedelta(hours=2)},
        {"incident_id": "overdue", "next_report_due_at": T0 - timedelta(minutes=1)},
        {"incident_id": "urgent", "next_report_due_at": T0 + timedelta(minutes=15)},
    ]
    assert [i["incident_id"] for i in order_queue(items)] == ["overdue", "urgent", "general", "reported"]


def test_status_follows_the_loop_and_closure_wins():
    assert incident_status({}, []) == "reported"
    assert incident_status({"category": "theft"}, ["dispatched"]) == "dispatched"
    assert incident_status({"category": "theft"}, ["dispatched", "acknowledged"]) == "acknowledged"
    assert incident_status({"resolved_at": T0}, ["resolved"]) == "resolved"
    assert incident_status({"closed_at": T0, "resolved_at": T0}, ["resolved"]) == "closed"


def test_rates_count_resolutions_not_closures_and_late_reports_as_not_on_time():
    handoffs = [
        {"unit_id": "U1", "dispatched_at": T0, "acknowledged_at": T0 + timedelta(minutes=3)},
        {"unit_id": "U1", "dispatched_at": T0, "acknowledged_at": T0 + timedelta(minutes=20), "late": True},
        {"unit_id": "U2", "dispatched_at": T0, "breached": True},
    ]
    incidents = [
        {"closed_at": T0, "outcome": "resolved", "satisfaction": "basically_satisfied"},
        {"closed_at": T0, "outcome": "closed_unresolved", "satisfaction": "not_satisfied"},
    ]
    result = rates(incidents, handoffs)
    assert result["response_rate"] == round(2 / 3, 4)
    assert result["resolution_rate"] == 0.5 and result["satisfaction_rate"] == 0.5
    units = {u["unit_id"]: u for u in result["units"]}
    assert units["U1"]["on_time_report_rate"] == 0.5 and units["U2"]["on_time_report_rate"] == 0.0


def test_time_to_report_lands_in_the_first_bucket_that_holds_it():
    handoffs = [
        {"dispatched_at": T0, "acknowledged_at": T0 + timedelta(seconds=s)} for s in (30, 60, 61, 10_000)
    ]
    counts = [b["count"] for b in time_to_report_histogram(handoffs)]
    assert counts == [2, 1, 0, 0, 0, 0, 1]


def test_tokens_name_their_user_and_are_refused_when_tampered_or_expired(monkeypatch):
    issuer = TokenIssuer("secret", max_age_seconds=60)
    token = issuer.issue("P0001")
    assert issuer.user_of(token) == "P0001"
    assert issuer.user_of(("f" if token[0] != "f" else "e") + token[1:]) is None  # payload changed, same signature
    assert TokenIssuer("another secret", 60).user_of(token) is None
    import itsdangerous.timed

    real = itsdangerous.timed.time.time
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real() + 61)
    assert issuer.user_of(token) is None


def test_no_demo_password_configured_means_nobody_signs_in():
    assert password_ok("gridwhistle", "gridwhistle")
    assert not password_ok("gridwhistle", None)
    assert not password_ok("guess", "gridwhistle")
