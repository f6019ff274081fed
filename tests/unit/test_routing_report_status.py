"""Whether every summoned unit has reported (报到), and why the command centre holds what it holds."""

from __future__ import annotations

from datetime import timedelta

from contracts.reference import demo_city
from contracts.vocabulary import Category, DeclineReason, HandoffRole, Urgency
from services.routing import domain
from services.routing.domain import RoutingIndex, report_status, why_at_command_centre
from services.runtime.clock import FakeClock

INDEX = RoutingIndex(demo_city())
GRID = "G0001"


def whistle(clock: FakeClock, category: Category = Category.VIOLENCE) -> list[domain.Handoff]:
    now = clock.now()
    return [
        domain.dispatch("inc-1", s, category=category, urgency=Urgency.URGENT, grid_id=GRID, dispatched_at=now,
                        report_due_at=now + timedelta(minutes=15), sequence="whistle")
        for s in domain.plan_whistle(INDEX, GRID, category)
    ]


def test_not_all_reported_until_the_last_summoned_unit_reports_and_then_at_that_instant() -> None:
    clock = FakeClock()
    officer, health = whistle(clock)
    clock.advance(60)
    officer = domain.acknowledge(officer, "P0001", clock.now()).handoff
    status = report_status([officer, health])
    assert (status.all_reported, status.all_reported_at, status.waiting_on) == (False, None, ("U-HEALTH-D01",))
    clock.advance(120)
    health = domain.acknowledge(health, "health-D01-1", clock.now()).handoff
    status = report_status([officer, health])
    assert (status.all_reported, status.all_reported_at) == (True, clock.now())


def test_a_declined_handoff_waits_on_its_replacement_and_escalation_rungs_do_not_count() -> None:
    clock = FakeClock()
    officer, health = whistle(clock)
    officer = domain.acknowledge(officer, "P0001", clock.now()).handoff
    declined = domain.decline(INDEX, health, DeclineReason.NO_CAPACITY, clock.now(), tried_unit_ids=set(),
                              max_bounces=2, sequence="decline:1")
    assert report_status([officer, declined.handoff, declined.successor]).waiting_on == ("U-DESK-S0101",)
    step = domain.plan_escalation(INDEX, declined.successor, max_repeats=3)
    rung = domain.escalate(declined.successor, step, clock.now(), timedelta(minutes=15), sequence="escalation:1")
    clock.advance(30)
    desk = domain.acknowledge(declined.successor, "desk-S0101-1", clock.now()).handoff
    assert report_status([officer, declined.handoff, desk, rung]) == domain.ReportStatus(True, clock.now(), ())


def test_nothing_summoned_is_not_all_reported() -> None:
    clock = FakeClock()
    released = [domain.release(h, clock.now()) for h in whistle(clock)]
    assert report_status(released).all_reported is False


def test_command_centre_items_say_why_they_are_there() -> None:
    clock = FakeClock()
    fallback = whistle(clock)[0]
    unknown_grid = domain.dispatch(
        "inc-2", domain.plan_whistle(INDEX, "G-NOWHERE", Category.THEFT)[0], category=Category.THEFT,
        urgency=Urgency.URGENT, grid_id="G-NOWHERE", dispatched_at=clock.now(), report_due_at=clock.now(),
        sequence="whistle",
    )
    step = domain.plan_escalation(INDEX, fallback, max_repeats=3, raised_level=1)
    escalated = domain.escalate(fallback, step, clock.now(), timedelta(minutes=15), sequence="e")
    bounced = domain.decline(INDEX, fallback, DeclineReason.NO_CAPACITY, clock.now(), tried_unit_ids=set(),
                             max_bounces=1, sequence="d").successor
    assert (unknown_grid.unit_id, why_at_command_centre(unknown_grid)) == ("U-CMD-D01", "fallback")
    assert (escalated.unit_id, why_at_command_centre(escalated)) == ("U-CMD-D01", "escalated")
    assert (bounced.unit_id, why_at_command_centre(bounced)) == ("U-CMD-D01", "bounced")
    assert bounced.role is HandoffRole.LEAD
