"""Console rules without I/O: who a demo user is, what they may see and do, queue order, filters, groups, tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts.reference import demo_city
from services.console.auth import password_ok
from services.console.domain import (
    Action,
    Forbidden,
    GroupBy,
    QueueFilter,
    Role,
    Scope,
    authorize,
    can_see,
    group_queue,
    incident_status,
    matches,
    order_queue,
    principal_for,
    sees_handoff,
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
        ("sup-1", Action.FEEDBACK, None),  # feedback is the reporter's verdict
        ("admin", Action.VERIFY, None),  # verification: grid workers and supervisors only
    ],
)
def test_actions_outside_the_users_unit_area_or_grid_are_forbidden(user_id, action, unit):
    with pytest.raises(Forbidden):
        authorize(who(user_id), action, HOME, handoff_unit_id=unit)


def test_actions_inside_the_users_unit_area_or_grid_are_allowed():
    authorize(who("A00011"), Action.ACKNOWLEDGE, HOME, handoff_unit_id="U-POL-P0001")
    authorize(who("cmd-D01-1"), Action.ESCALATE, HOME)
    authorize(who("W0001"), Action.FEEDBACK, HOME)
    authorize(who("sup-1"), Action.VERIFY, HOME)  # a supervisor verifies any grid's outcome (核查)


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


def item(incident_id: str, station: str, district: str, urgency: str, status: str, *departments: str) -> dict:
    return {
        "incident_id": incident_id, "station_id": station, "district_id": district, "urgency": urgency,
        "status": status, "handoffs": [{"department": d} for d in departments],
    }


QUEUE = [
    item("a", "S0101", "D01", "urgent", "dispatched", "police", "health"),
    item("b", "S0102", "D01", "general", "acknowledged", "urban_management"),
    item("c", "S0101", "D01", "general", "dispatched", "police"),
    item("d", "S0201", "D02", "urgent", "dispatched", "police", "fire_rescue"),
]


def test_filters_combine_and_a_department_matches_any_summoned_unit():
    def ids(wanted: QueueFilter) -> list[str]:
        return [i["incident_id"] for i in QUEUE if matches(i, wanted)]

    assert ids(QueueFilter()) == ["a", "b", "c", "d"]
    assert ids(QueueFilter(department="health")) == ["a"]
    assert ids(QueueFilter(district_id="D01", urgency="general")) == ["b", "c"]
    assert ids(QueueFilter(station_id="S0101", status="dispatched", department="police")) == ["a", "c"]


def test_groups_keep_queue_order_and_an_incident_is_in_every_department_it_summoned():
    assert group_queue(QUEUE, GroupBy.STATION) == [("S0101", ["a", "c"]), ("S0102", ["b"]), ("S0201", ["d"])]
    assert group_queue(QUEUE, GroupBy.DISTRICT) == [("D01", ["a", "b", "c"]), ("D02", ["d"])]
    assert group_queue(QUEUE, GroupBy.DEPARTMENT) == [
        ("health", ["a"]), ("police", ["a", "c", "d"]), ("urban_management", ["b"]), ("fire_rescue", ["d"]),
    ]


def test_no_demo_password_configured_means_nobody_signs_in():
    assert password_ok("gridwhistle", "gridwhistle")
    assert not password_ok("gridwhistle", None)
    assert not password_ok("guess", "gridwhistle")
