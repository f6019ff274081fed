"""Routing domain: the escalation ladder for missed report deadlines, and reclassification."""

from __future__ import annotations

from datetime import timedelta

from contracts.reference import demo_city
from contracts.vocabulary import Category, HandoffRole, HandoffState, Urgency
from services.routing import domain
from services.routing.domain import RoutingIndex
from services.runtime.clock import FakeClock

INDEX = RoutingIndex(demo_city())
GRID = "G0001"  # district D01, station S0101, officer P0001
ESCALATION_WINDOW = timedelta(minutes=15)


def officer_handoff(clock: FakeClock, grid: str = GRID) -> domain.Handoff:
    return domain.dispatch(
        "inc-1", domain.Summons("U-POL-P0001", "police", HandoffRole.LEAD, "test"), category=Category.THEFT,
        urgency=Urgency.URGENT, grid_id=grid, dispatched_at=clock.now(),
        report_due_at=clock.now() + timedelta(minutes=15), sequence="whistle",
    )


def climb(breached: domain.Handoff, clock: FakeClock, max_repeats: int = 3) -> domain.Handoff | None:
    step = domain.plan_escalation(INDEX, breached, max_repeats)
    if step is None:
        return None
    return domain.escalate(breached, step, clock.now(), ESCALATION_WINDOW, sequence=f"escalation:{breached.handoff_id}")


def test_ladder_climbs_duty_desk_then_command_centre_then_repeats_at_the_top_until_the_cap() -> None:
    clock = FakeClock()
    breached = officer_handoff(clock)
    rungs = []
    for _ in range(10):
        clock.advance(timedelta(minutes=15))
        escalation = climb(breached, clock, max_repeats=3)
        if escalation is None:
            break
        rungs.append((escalation.unit_id, escalation.escalation_level, escalation.escalation_repeat))
        assert escalation.role is HandoffRole.ESCALATION
        assert escalation.report_due_at == clock.now() + ESCALATION_WINDOW
        assert escalation.root == breached.root
        breached = escalation
    assert rungs == [
        ("U-DESK-S0101", 1, 0),
        ("U-CMD-D01", 2, 0),
        ("U-CMD-D01", 2, 1),
        ("U-CMD-D01", 2, 2),
        ("U-CMD-D01", 2, 3),
    ]
    assert len({r for r in rungs}) == len(rungs)


def test_breach_of_an_acknowledged_or_resolved_handoff_does_not_escalate() -> None:
    clock = FakeClock()
    acked = domain.acknowledge(officer_handoff(clock), "P0001", clock.now()).handoff
    assert domain.plan_escalation(INDEX, acked, 3) is None
    assert domain.plan_escalation(INDEX, domain.release(officer_handoff(clock), clock.now()), 3) is None


def test_unknown_grid_escalates_straight_to_the_default_command_centre() -> None:
    clock = FakeClock()
    step = domain.plan_escalation(INDEX, officer_handoff(clock, grid="G-NOWHERE"), 3)
    assert (step.level, step.summons.unit_id) == (2, "U-CMD-D01")


def test_escalation_ids_differ_per_rung_even_for_the_same_unit() -> None:
    clock = FakeClock()
    first = climb(climb(officer_handoff(clock), clock), clock)
    second = climb(first, clock)
    assert first.unit_id == second.unit_id and first.handoff_id != second.handoff_id


def _active(category: Category, urgency: Urgency, clock: FakeClock) -> list[domain.Handoff]:
    return [
        domain.dispatch("inc-1", s, category=category, urgency=urgency, grid_id=GRID, dispatched_at=clock.now(),
                        report_due_at=clock.now() + timedelta(hours=2), sequence="whistle")
        for s in domain.plan_whistle(INDEX, GRID, category)
    ]


def test_reclassification_summons_new_units_and_releases_those_no_longer_responsible() -> None:
    clock = FakeClock()
    active = _active(Category.NOISE, Urgency.GENERAL, clock)  # urban management leads, officer co-operates
    clock.advance(timedelta(minutes=30))
    fresh = clock.now() + timedelta(hours=2)
    plan = domain.replan(INDEX, GRID, active, category=Category.ENVIRONMENT, previous_category=Category.NOISE,
                         urgency=Urgency.GENERAL, previous_urgency=Urgency.GENERAL, now=clock.now(), fresh_due=fresh)
    assert [(s.unit_id, s.role) for s, _ in plan.summon] == [("U-ECOLOGY-D01", HandoffRole.CO_OPERATING)]
    assert plan.release == () and plan.superseded == ()


def test_reclassification_with_a_new_lead_releases_the_old_lead_and_keeps_the_old_budget_on_role_change() -> None:
    clock = FakeClock()
    active = _active(Category.NOISE, Urgency.GENERAL, clock)  # officer is co-operating here
    clock.advance(timedelta(minutes=30))
    fresh = clock.now() + timedelta(minutes=15)
    plan = domain.replan(INDEX, GRID, active, category=Category.THEFT, previous_category=Category.NOISE,
                         urgency=Urgency.URGENT, previous_urgency=Urgency.GENERAL, now=clock.now(), fresh_due=fresh)
    assert {(h.unit_id, h.role) for h in plan.release} == {
        ("U-URBAN_MANAGEMENT-D01", HandoffRole.LEAD),
        ("U-POL-P0001", HandoffRole.CO_OPERATING),
    }
    assert [(s.unit_id, s.role, due) for s, due in plan.summon] == [("U-POL-P0001", HandoffRole.LEAD, fresh)]


def test_urgency_tightening_redispatches_only_unacknowledged_handoffs_and_never_later() -> None:
    clock = FakeClock()
    active = _active(Category.NOISE, Urgency.GENERAL, clock)
    active[1] = domain.acknowledge(active[1], "P0001", clock.now()).handoff
    clock.advance(timedelta(minutes=110))  # 10 minutes of the 2-hour budget left
    plan = domain.replan(INDEX, GRID, active, category=Category.NOISE, previous_category=Category.NOISE,
                         urgency=Urgency.URGENT, previous_urgency=Urgency.GENERAL, now=clock.now(),
                         fresh_due=clock.now() + timedelta(minutes=15))
    assert plan.superseded == ()  # 15 fresh minutes would be later than the 10 left
    clock_early = FakeClock()
    active = _active(Category.NOISE, Urgency.GENERAL, clock_early)
    active[1] = domain.acknowledge(active[1], "P0001", clock_early.now()).handoff
    plan = domain.replan(INDEX, GRID, active, category=Category.NOISE, previous_category=Category.NOISE,
                         urgency=Urgency.URGENT, previous_urgency=Urgency.GENERAL, now=clock_early.now(),
                         fresh_due=clock_early.now() + timedelta(minutes=15))
    assert [h.unit_id for h in plan.superseded] == ["U-URBAN_MANAGEMENT-D01"]
    assert all(h.state is HandoffState.DISPATCHED for h in plan.superseded)


def test_a_signal_about_a_handoff_reported_by_the_due_instant_is_stale_and_plans_no_escalation() -> None:
    clock = FakeClock()
    handoff = officer_handoff(clock)
    due = handoff.report_due_at
    policy = domain.EscalationPolicy(warn_at={Urgency.URGENT: 0.8})
    assert not domain.reported_in_time(handoff, due)
    assert domain.plan_escalation(INDEX, handoff, 3) is not None
    for acked_at in (due - timedelta(minutes=1), due):  # in time, or exactly at the due instant
        acked = domain.acknowledge(handoff, "P0001", acked_at).handoff
        assert domain.reported_in_time(acked, due)
        assert domain.plan_escalation(INDEX, acked, 3) is None
        assert domain.plan_warning_escalation(INDEX, acked, 0.8, policy) is None
    late = domain.acknowledge(handoff, "P0001", due + timedelta(seconds=1)).handoff
    assert not domain.reported_in_time(late, due), "a late report is not a stale breach"
    assert domain.plan_escalation(INDEX, late, 3) is None, "but there is nobody left to chase"
