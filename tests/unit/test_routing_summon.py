"""Routing domain: a dispatcher adds a department to the whistle (增派部门)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from contracts.reference import demo_city
from contracts.vocabulary import Category, HandoffRole, HandoffState, Urgency
from services.routing import domain
from services.routing.domain import Conflict, Handoff, Invalid, Refused, RoutingIndex
from services.runtime.clock import FakeClock

INDEX = RoutingIndex(demo_city())
GRID = "G0001"  # district D01, station S0101, officer P0001
DESK_MEMBER = "desk-S0101-1"
COMMAND_CENTRE_MEMBER = "cmd-D01-1"


def summon(
    department: str, *, actor: str = DESK_MEMBER, existing: list[Handoff] | None = None, closed: bool = False,
    clock: FakeClock | None = None,
) -> domain.Outcome:
    clock = clock or FakeClock()
    return domain.summon_department(
        INDEX, incident_id="inc-1", grid_id=GRID, category=Category.ENVIRONMENT, urgency=Urgency.GENERAL,
        department=department, actor_id=actor, existing=existing or [], closed=closed, now=clock.now(),
        report_due_at=clock.now() + timedelta(hours=2),
    )


def test_a_duty_desk_member_summons_the_departments_district_unit_as_co_operating_from_now() -> None:
    clock = FakeClock()
    outcome = summon("health", clock=clock)
    assert outcome.changed
    handoff = outcome.handoff
    assert (handoff.unit_id, handoff.department, handoff.role, handoff.state) == (
        "U-HEALTH-D01", "health", HandoffRole.CO_OPERATING, HandoffState.DISPATCHED,
    )
    assert handoff.dispatched_at == clock.now()
    assert handoff.report_due_at == clock.now() + timedelta(hours=2)
    assert handoff.handoff_id == domain.summon_handoff_id("inc-1", "U-HEALTH-D01", "health")


def test_a_command_centre_member_of_the_district_may_summon_too() -> None:
    assert summon("ecology", actor=COMMAND_CENTRE_MEMBER).handoff.unit_id == "U-ECOLOGY-D01"


@pytest.mark.parametrize("actor", ["P0001", "health-D01-1", "desk-S0201-1", "cmd-D02-1"])
def test_anyone_but_a_dispatcher_of_the_grid_is_refused(actor: str) -> None:
    with pytest.raises(Refused, match=actor):
        summon("health", actor=actor)


def test_an_unknown_department_is_invalid() -> None:
    with pytest.raises(Invalid, match="unknown department 'astrology'"):
        summon("astrology")


def test_a_department_without_a_unit_in_the_district_is_invalid() -> None:
    with pytest.raises(Invalid, match="no unit of department 'command'"):
        summon("command")


def test_summoning_the_same_department_again_returns_the_first_handoff_unchanged() -> None:
    first = summon("health").handoff
    again = summon("health", existing=[first])
    assert not again.changed and again.handoff == first


def test_a_department_already_working_the_incident_is_not_summoned_twice() -> None:
    clock = FakeClock()
    lead = domain.dispatch(
        "inc-1", domain.Summons("U-HEALTH-D01", "health", HandoffRole.LEAD, "responsibility_list"),
        category=Category.ENVIRONMENT, urgency=Urgency.GENERAL, grid_id=GRID, dispatched_at=clock.now(),
        report_due_at=clock.now() + timedelta(hours=2), sequence="whistle",
    )
    outcome = summon("health", existing=[lead])
    assert not outcome.changed and outcome.handoff == lead


def test_a_department_whose_handoff_ended_is_summoned_again() -> None:
    clock = FakeClock()
    released = domain.release(
        domain.dispatch(
            "inc-1", domain.Summons("U-HEALTH-D01", "health", HandoffRole.CO_OPERATING, "responsibility_list"),
            category=Category.ENVIRONMENT, urgency=Urgency.GENERAL, grid_id=GRID, dispatched_at=clock.now(),
            report_due_at=clock.now() + timedelta(hours=2), sequence="whistle",
        ),
        clock.now(),
    )
    outcome = summon("health", existing=[released])
    assert outcome.changed and outcome.handoff.handoff_id != released.handoff_id


def test_a_closed_incident_cannot_get_a_new_department() -> None:
    with pytest.raises(Conflict, match="closed"):
        summon("health", closed=True)
