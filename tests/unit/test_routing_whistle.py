"""Routing domain: the whistle fans out by the responsibility list, with fallbacks (兜底)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from contracts.deadline_policy import DEFAULT_POLICY
from contracts.reference import ReferenceData, demo_city
from contracts.vocabulary import Category, DeadlineKind, HandoffRole, HandoffState, Urgency
from services.routing import domain
from services.routing.domain import RoutingIndex, plan_whistle
from services.runtime.clock import FakeClock

CITY = demo_city()
INDEX = RoutingIndex(CITY)
GRID = "G0001"  # district D01, station S0101, officer P0001
OFFICER_UNIT = "U-POL-P0001"


def units(summons: list[domain.Summons]) -> list[tuple[str, HandoffRole]]:
    return [(s.unit_id, s.role) for s in summons]


def test_police_led_category_summons_the_grid_officer_as_lead_and_cooperating_departments() -> None:
    plan = plan_whistle(INDEX, GRID, Category.NEIGHBOUR_DISPUTE)
    assert units(plan) == [(OFFICER_UNIT, HandoffRole.LEAD), ("U-JUSTICE-D01", HandoffRole.CO_OPERATING)]


def test_fire_summons_fire_rescue_lead_with_police_and_health_in_the_grids_district() -> None:
    plan = plan_whistle(INDEX, GRID, Category.FIRE)
    assert units(plan) == [
        ("U-FIRE_RESCUE-D01", HandoffRole.LEAD),
        (OFFICER_UNIT, HandoffRole.CO_OPERATING),
        ("U-HEALTH-D01", HandoffRole.CO_OPERATING),
    ]


def test_grid_officer_is_summoned_even_when_the_list_does_not_name_police() -> None:
    plan = plan_whistle(INDEX, GRID, Category.ENVIRONMENT)
    assert units(plan) == [
        ("U-URBAN_MANAGEMENT-D01", HandoffRole.LEAD),
        ("U-ECOLOGY-D01", HandoffRole.CO_OPERATING),
        (OFFICER_UNIT, HandoffRole.CO_OPERATING),
    ]


def test_department_units_follow_the_grids_district() -> None:
    grid = next(g for g in CITY.grids if CITY.district_of(g).id == "D03")
    plan = plan_whistle(INDEX, grid.id, Category.MARKET_SAFETY)
    assert plan[0].unit_id == "U-MARKET_REGULATION-D03"
    assert plan[1].unit_id == CITY.officer(grid.officer_id).unit_id


def test_multi_department_handoffs_have_independent_state_and_deadlines() -> None:
    clock = FakeClock()
    due = clock.now() + DEFAULT_POLICY.duration(DeadlineKind.REPORT, Urgency.URGENT, Category.FIRE)
    handoffs = [
        domain.dispatch("inc-1", s, category=Category.FIRE, urgency=Urgency.URGENT, grid_id=GRID,
                        dispatched_at=clock.now(), report_due_at=due, sequence="whistle")
        for s in plan_whistle(INDEX, GRID, Category.FIRE)
    ]
    assert len({h.handoff_id for h in handoffs}) == 3
    assert all(h.report_due_at == clock.now() + timedelta(minutes=15) for h in handoffs)
    clock.advance(timedelta(minutes=5))
    acked = domain.acknowledge(handoffs[0], "fire_rescue-D01-1", clock.now()).handoff
    assert acked.state is HandoffState.ACKNOWLEDGED
    assert [h.state for h in handoffs[1:]] == [HandoffState.DISPATCHED, HandoffState.DISPATCHED]


def test_handoff_ids_are_deterministic_per_incident_unit_and_sequence() -> None:
    first = domain.handoff_id_for("inc-1", OFFICER_UNIT, "whistle")
    assert first == domain.handoff_id_for("inc-1", OFFICER_UNIT, "whistle")
    assert first != domain.handoff_id_for("inc-1", OFFICER_UNIT, "reopen:1")
    assert first != domain.handoff_id_for("inc-2", OFFICER_UNIT, "whistle")


def test_unknown_grid_goes_to_the_default_command_centre() -> None:
    plan = plan_whistle(INDEX, "G-NOWHERE", Category.THEFT)
    assert units(plan) == [("U-CMD-D01", HandoffRole.LEAD)]
    assert plan[0].reason == "fallback:unknown_grid"


def test_default_command_centre_is_configurable() -> None:
    index = RoutingIndex(CITY, default_command_centre_unit_id="U-CMD-D02")
    assert plan_whistle(index, "G-NOWHERE", Category.THEFT)[0].unit_id == "U-CMD-D02"
    with pytest.raises(ValueError, match="default command centre"):
        RoutingIndex(CITY, default_command_centre_unit_id="U-NOPE")


def _city_without(department: str | None = None, category: Category | None = None) -> ReferenceData:
    document = CITY.model_dump()
    if department:
        document["units"] = [u for u in document["units"] if u["id"] != f"U-{department.upper()}-D01"]
    if category:
        document["responsibilities"] = [r for r in document["responsibilities"] if r["category"] != category]
    return ReferenceData.model_validate(document)


def test_no_responsibility_row_makes_the_district_command_centre_lead_and_keeps_the_officer() -> None:
    index = RoutingIndex(_city_without(category=Category.NOISE))
    plan = plan_whistle(index, GRID, Category.NOISE)
    assert units(plan) == [("U-CMD-D01", HandoffRole.LEAD), (OFFICER_UNIT, HandoffRole.CO_OPERATING)]
    assert plan[0].reason == "fallback:no_responsibility_row"


def test_department_without_a_unit_in_the_district_falls_back_to_the_command_centre() -> None:
    index = RoutingIndex(_city_without(department="fire_rescue"))
    plan = plan_whistle(index, GRID, Category.FIRE)
    assert units(plan)[0] == ("U-CMD-D01", HandoffRole.LEAD)
    assert plan[0].reason == "fallback:no_unit_for_fire_rescue"
    # The other grid's districts still have their fire unit.
    other = next(g for g in CITY.grids if CITY.district_of(g).id == "D02")
    assert plan_whistle(index, other.id, Category.FIRE)[0].unit_id == "U-FIRE_RESCUE-D02"


def test_district_specific_responsibility_row_wins_over_the_general_one() -> None:
    document = CITY.model_dump()
    document["responsibilities"] = [
        *document["responsibilities"],
        {"category": Category.NOISE, "lead_department": "ecology", "co_departments": (), "district_id": "D01"},
    ]
    index = RoutingIndex(ReferenceData.model_validate(document))
    assert plan_whistle(index, GRID, Category.NOISE)[0].unit_id == "U-ECOLOGY-D01"
    other = next(g for g in CITY.grids if CITY.district_of(g).id == "D02")
    assert plan_whistle(index, other.id, Category.NOISE)[0].unit_id == "U-URBAN_MANAGEMENT-D02"
