"""Routing domain: what a summoned unit may do with its handoff, and re-routing after a decline."""

from __future__ import annotations

from datetime import timedelta

import pytest

from contracts.reference import ReferenceData, demo_city
from contracts.vocabulary import Category, DeclineReason, Disposition, HandoffRole, HandoffState, Urgency
from services.routing import domain
from services.routing.domain import Conflict, Handoff, Refused, RoutingIndex
from services.runtime.clock import FakeClock

CITY = demo_city()
INDEX = RoutingIndex(CITY)
GRID = "G0001"  # district D01, station S0101, officer P0001


def _neighbourly_city() -> ReferenceData:
    document = CITY.model_dump()
    document["districts"] = [
        {**d, "neighbour_district_ids": ("D02",) if d["id"] == "D01" else ()} for d in document["districts"]
    ]
    return ReferenceData.model_validate(document)


NEIGHBOURLY = RoutingIndex(_neighbourly_city())


def handoff(unit_id: str, department: str, clock: FakeClock, role: HandoffRole = HandoffRole.LEAD) -> Handoff:
    summons = domain.Summons(unit_id, department, role, "test")
    return domain.dispatch(
        "inc-1", summons, category=Category.ENVIRONMENT, urgency=Urgency.GENERAL, grid_id=GRID,
        dispatched_at=clock.now(), report_due_at=clock.now() + timedelta(hours=2), sequence="whistle",
    )


def test_acknowledge_after_the_due_instant_is_recorded_late_not_refused() -> None:
    clock = FakeClock()
    h = handoff("U-POL-P0001", "police", clock)
    clock.advance(timedelta(hours=3))
    outcome = domain.acknowledge(h, "P0001", clock.now())
    assert outcome.changed and outcome.handoff.late
    assert outcome.handoff.acknowledged_at == clock.now()


def test_acknowledge_twice_returns_the_first_result_unchanged() -> None:
    clock = FakeClock()
    first = domain.acknowledge(handoff("U-POL-P0001", "police", clock), "P0001", clock.now()).handoff
    clock.advance(60)
    again = domain.acknowledge(first, "A00011", clock.now())
    assert not again.changed
    assert again.handoff == first


def test_only_members_of_the_summoned_unit_may_act() -> None:
    clock = FakeClock()
    h = handoff("U-POL-P0001", "police", clock)
    domain.require_member(INDEX, h, "P0001")
    domain.require_member(INDEX, h, "A00011")  # an auxiliary of the officer's unit
    with pytest.raises(Refused, match="P0002 is not a member of unit U-POL-P0001"):
        domain.require_member(INDEX, h, "P0002")


def test_resolve_before_acknowledge_is_a_conflict() -> None:
    clock = FakeClock()
    with pytest.raises(Conflict, match="not been acknowledged"):
        domain.resolve(handoff("U-POL-P0001", "police", clock), "P0001", Disposition.RESOLVED, "", clock.now())


def test_resolve_after_acknowledge_and_on_scene() -> None:
    clock = FakeClock()
    h = domain.acknowledge(handoff("U-POL-P0001", "police", clock), "P0001", clock.now()).handoff
    h = domain.mark_on_scene(h, "P0001", clock.advance(600)).handoff
    done = domain.resolve(h, "P0001", Disposition.RESOLVED, "mediated", clock.advance(600))
    assert done.changed and done.handoff.state is HandoffState.RESOLVED
    with pytest.raises(Conflict):
        domain.acknowledge(domain.release(done.handoff, clock.now()), "P0001", clock.now())


def test_on_scene_without_acknowledgement_counts_as_reporting() -> None:
    clock = FakeClock()
    h = domain.mark_on_scene(handoff("U-POL-P0001", "police", clock), "P0001", clock.advance(300)).handoff
    assert h.state is HandoffState.ON_SCENE and h.acknowledged_at == clock.now() and not h.late


def test_decline_reroutes_with_the_remaining_budget_not_a_fresh_one() -> None:
    clock = FakeClock()
    h = handoff("U-URBAN_MANAGEMENT-D01", "urban_management", clock)
    clock.advance(timedelta(minutes=90))
    outcome = domain.decline(NEIGHBOURLY, h, DeclineReason.NOT_OUR_AREA, clock.now(),
                             tried_unit_ids=set(), max_bounces=3, sequence=f"decline:{h.handoff_id}")
    assert outcome.handoff.state is HandoffState.DECLINED
    successor = outcome.successor
    assert successor.unit_id == "U-URBAN_MANAGEMENT-D02"  # the department in the neighbouring district
    assert successor.report_due_at == h.report_due_at  # 30 minutes left, not 2 fresh hours
    assert successor.dispatched_at == clock.now()
    assert successor.bounce_count == 1 and successor.replaces_handoff_id == h.handoff_id
    assert successor.role is HandoffRole.LEAD and successor.root == h.handoff_id
    assert outcome.handoff.successor_handoff_id == successor.handoff_id


def test_decline_candidates_go_neighbour_then_duty_desk_then_command_centre() -> None:
    clock = FakeClock()
    h = handoff("U-URBAN_MANAGEMENT-D01", "urban_management", clock)
    tried: set[str] = set()
    seen = []
    for _ in range(3):
        outcome = domain.decline(NEIGHBOURLY, h, DeclineReason.NO_CAPACITY, clock.now(),
                                 tried_unit_ids=tried, max_bounces=10, sequence=f"decline:{h.handoff_id}")
        tried |= {h.unit_id}
        h = outcome.successor
        seen.append(h.unit_id)
    assert seen == ["U-URBAN_MANAGEMENT-D02", "U-DESK-S0101", "U-CMD-D01"]


def test_police_decline_goes_to_the_station_duty_desk() -> None:
    clock = FakeClock()
    outcome = domain.decline(INDEX, handoff("U-POL-P0001", "police", clock), DeclineReason.NO_CAPACITY, clock.now(),
                             tried_unit_ids=set(), max_bounces=2, sequence="decline:x")
    assert outcome.successor.unit_id == "U-DESK-S0101"


def test_bounce_cap_hands_the_incident_to_the_command_centre() -> None:
    clock = FakeClock()
    h = handoff("U-URBAN_MANAGEMENT-D01", "urban_management", clock)
    first = domain.decline(NEIGHBOURLY, h, DeclineReason.NOT_OUR_AREA, clock.now(),
                           tried_unit_ids=set(), max_bounces=2, sequence="decline:1").successor
    second = domain.decline(NEIGHBOURLY, first, DeclineReason.NOT_OUR_AREA, clock.now(),
                            tried_unit_ids={h.unit_id}, max_bounces=2, sequence="decline:2").successor
    assert (first.unit_id, first.bounce_count) == ("U-URBAN_MANAGEMENT-D02", 1)
    assert (second.unit_id, second.bounce_count) == ("U-CMD-D01", 2)
    assert second.report_due_at == h.report_due_at
    with pytest.raises(Conflict, match="owner of last resort"):
        domain.decline(NEIGHBOURLY, second, DeclineReason.NO_CAPACITY, clock.now(),
                       tried_unit_ids=set(), max_bounces=2, sequence="decline:3")


def test_declining_twice_has_one_effect_and_declining_after_acknowledging_is_a_conflict() -> None:
    clock = FakeClock()
    h = handoff("U-POL-P0001", "police", clock)
    declined = domain.decline(INDEX, h, DeclineReason.NO_CAPACITY, clock.now(), tried_unit_ids=set(),
                              max_bounces=2, sequence="decline:x").handoff
    assert not domain.decline(INDEX, declined, DeclineReason.NO_CAPACITY, clock.now(), tried_unit_ids=set(),
                              max_bounces=2, sequence="decline:x").changed
    acked = domain.acknowledge(h, "P0001", clock.now()).handoff
    with pytest.raises(Conflict):
        domain.decline(INDEX, acked, DeclineReason.NO_CAPACITY, clock.now(), tried_unit_ids=set(),
                       max_bounces=2, sequence="decline:y")


def test_reassignment_by_a_dispatcher_keeps_the_due_instant() -> None:
    clock = FakeClock()
    h = handoff("U-URBAN_MANAGEMENT-D01", "urban_management", clock)
    clock.advance(timedelta(minutes=20))
    outcome = domain.reassign(INDEX, h, "desk-S0101-1", "U-ECOLOGY-D01", clock.now(), sequence=f"reassign:{h.handoff_id}")
    assert outcome.handoff.state is HandoffState.REASSIGNED
    new = outcome.successor
    assert (new.unit_id, new.department, new.role) == ("U-ECOLOGY-D01", "ecology", HandoffRole.LEAD)
    assert new.report_due_at == h.report_due_at and new.dispatched_at == clock.now()
    again = domain.reassign(INDEX, outcome.handoff, "cmd-D01-1", "U-ECOLOGY-D01", clock.now(),
                            sequence=f"reassign:{h.handoff_id}")
    assert not again.changed
    with pytest.raises(Conflict):
        domain.reassign(INDEX, outcome.handoff, "cmd-D01-1", "U-HEALTH-D01", clock.now(),
                        sequence=f"reassign:{h.handoff_id}")


def test_reassignment_is_refused_to_non_dispatchers_and_to_other_districts_dispatchers() -> None:
    clock = FakeClock()
    h = handoff("U-URBAN_MANAGEMENT-D01", "urban_management", clock)
    for actor in ("urban_management-D01-1", "P0001", "cmd-D02-1", "desk-S0102-1"):
        with pytest.raises(Refused, match="not a dispatcher"):
            domain.reassign(INDEX, h, actor, "U-ECOLOGY-D01", clock.now(), sequence="reassign:x")
    with pytest.raises(Conflict, match="unknown unit"):
        domain.reassign(INDEX, h, "cmd-D01-1", "U-NOPE", clock.now(), sequence="reassign:x")
    with pytest.raises(Conflict, match="already with unit"):
        domain.reassign(INDEX, h, "cmd-D01-1", h.unit_id, clock.now(), sequence="reassign:x")
