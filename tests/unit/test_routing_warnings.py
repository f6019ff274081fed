"""Escalation on a deadline warning, per urgency, and a ladder that only climbs afterwards."""

from __future__ import annotations

from datetime import timedelta

from contracts.reference import demo_city
from contracts.vocabulary import Category, HandoffRole, Urgency
from services.routing import domain
from services.routing.domain import LEVEL_COMMAND_CENTRE, LEVEL_DUTY_DESK, EscalationPolicy, RoutingIndex
from services.runtime.clock import FakeClock

INDEX = RoutingIndex(demo_city())
GRID = "G0001"  # station S0101, district D01
URGENT_ON_80 = EscalationPolicy(warn_at={Urgency.URGENT: 0.8})


def officer_handoff(urgency: Urgency, clock: FakeClock | None = None) -> domain.Handoff:
    now = (clock or FakeClock()).now()
    return domain.dispatch(
        "inc-1", domain.Summons("U-POL-P0001", "police", HandoffRole.LEAD, "test"), category=Category.THEFT,
        urgency=urgency, grid_id=GRID, dispatched_at=now, report_due_at=now + timedelta(minutes=15), sequence="whistle",
    )


def test_urgent_warning_at_80_percent_raises_the_duty_desk() -> None:
    step = domain.plan_warning_escalation(INDEX, officer_handoff(Urgency.URGENT), 0.8, URGENT_ON_80)
    assert step is not None
    assert (step.level, step.summons.unit_id, step.summons.role) == (LEVEL_DUTY_DESK, "U-DESK-S0101", HandoffRole.ESCALATION)
    assert step.reason == "warning: 80% of the report window of unit U-POL-P0001 elapsed without a report"


def test_an_earlier_warning_than_the_policy_names_does_not_escalate() -> None:
    assert domain.plan_warning_escalation(INDEX, officer_handoff(Urgency.URGENT), 0.5, URGENT_ON_80) is None


def test_general_urgency_escalates_on_breach_only_unless_the_policy_says_otherwise() -> None:
    general = officer_handoff(Urgency.GENERAL)
    assert domain.plan_warning_escalation(INDEX, general, 0.8, URGENT_ON_80) is None
    both = EscalationPolicy(warn_at={Urgency.URGENT: 0.8, Urgency.GENERAL: 0.5})
    assert domain.plan_warning_escalation(INDEX, general, 0.5, both).level == LEVEL_DUTY_DESK


def test_a_reported_handoff_a_rung_or_an_already_escalated_chain_is_not_escalated_on_warning() -> None:
    clock = FakeClock()
    handoff = officer_handoff(Urgency.URGENT, clock)
    reported = domain.acknowledge(handoff, "P0001", clock.now()).handoff
    assert domain.plan_warning_escalation(INDEX, reported, 0.8, URGENT_ON_80) is None
    assert domain.plan_warning_escalation(INDEX, handoff, 0.8, URGENT_ON_80, raised_level=1) is None
    step = domain.plan_warning_escalation(INDEX, handoff, 0.8, URGENT_ON_80)
    rung = domain.escalate(handoff, step, clock.now(), timedelta(minutes=15), sequence="warning:x")
    assert domain.plan_warning_escalation(INDEX, rung, 0.8, URGENT_ON_80) is None


def test_breach_after_a_warning_escalation_goes_to_the_command_centre_not_the_desk_again() -> None:
    handoff = officer_handoff(Urgency.URGENT)
    step = domain.plan_escalation(INDEX, handoff, max_repeats=3, raised_level=LEVEL_DUTY_DESK)
    assert (step.level, step.summons.unit_id) == (LEVEL_COMMAND_CENTRE, "U-CMD-D01")
    without_warning = domain.plan_escalation(INDEX, handoff, max_repeats=3)
    assert (without_warning.level, without_warning.summons.unit_id) == (LEVEL_DUTY_DESK, "U-DESK-S0101")


def test_breach_of_a_chain_already_at_the_top_repeats_there_within_the_cap() -> None:
    handoff = officer_handoff(Urgency.URGENT)
    step = domain.plan_escalation(INDEX, handoff, max_repeats=3, raised_level=LEVEL_COMMAND_CENTRE)
    assert (step.level, step.repeat, step.summons.unit_id) == (LEVEL_COMMAND_CENTRE, 1, "U-CMD-D01")
    assert domain.plan_escalation(INDEX, handoff, max_repeats=0, raised_level=LEVEL_COMMAND_CENTRE) is None


def test_a_late_duty_desk_is_never_escalated_to_itself() -> None:
    now = FakeClock().now()
    desk = domain.dispatch(  # e.g. standing in for an off-duty officer at night
        "inc-1", domain.Summons("U-DESK-S0101", "police", HandoffRole.LEAD, "test"), category=Category.THEFT,
        urgency=Urgency.URGENT, grid_id=GRID, dispatched_at=now, report_due_at=now + timedelta(minutes=15),
        sequence="whistle",
    )
    assert domain.plan_warning_escalation(INDEX, desk, 0.8, URGENT_ON_80) is None
    step = domain.plan_escalation(INDEX, desk, max_repeats=3)
    assert (step.level, step.summons.unit_id) == (LEVEL_COMMAND_CENTRE, "U-CMD-D01")
