"""Routing domain: first receiver leads (首接负责) — the lead stays responsible until closure."""

from __future__ import annotations

from datetime import timedelta

from contracts.reference import demo_city
from contracts.vocabulary import Category, DeclineReason, Disposition, HandoffRole, HandoffState, Urgency
from services.routing import domain
from services.routing.domain import Handoff, RoutingIndex
from services.runtime.clock import FakeClock

INDEX = RoutingIndex(demo_city())
GRID = "G0001"  # district D01, station S0101, officer P0001; FakeClock's default instant is a duty day for P0001


def whistle(category: Category, clock: FakeClock) -> list[Handoff]:
    return [
        domain.dispatch("inc-lead", s, category=category, urgency=Urgency.GENERAL, grid_id=GRID,
                        dispatched_at=clock.now(), report_due_at=clock.now() + timedelta(hours=2), sequence="whistle")
        for s in domain.plan_whistle(INDEX, GRID, category, clock.now())
    ]


def put(handoffs: list[Handoff], *changed: Handoff) -> list[Handoff]:
    """The incident's handoffs with `changed` replacing their old versions or appended (dispatch order)."""
    by_id = {h.handoff_id: h for h in changed}
    updated = [by_id.pop(h.handoff_id, h) for h in handoffs]
    return updated + list(by_id.values())


def current_leads(handoffs: list[Handoff]) -> list[Handoff]:
    return [h for h in handoffs if h.role is HandoffRole.LEAD and h.state not in domain.MOVED_ON_STATES]


def test_first_receiver_leads_until_closure_and_the_lead_passes_only_by_a_named_fact() -> None:
    clock = FakeClock()
    handoffs = whistle(Category.ENVIRONMENT, clock)  # urban management leads; ecology and the officer co-operate
    first = domain.lead_of(handoffs)
    assert (first.unit_id, first.role) == ("U-URBAN_MANAGEMENT-D01", HandoffRole.LEAD)
    assert set(domain.LEAD_PASSES_BY) == {
        "decline", "reassignment", "reclassification", "urgency_tightened", "reopen", "reopen_cap"}

    # An escalation of the late lead is a team queue beside it, never a new lead.
    clock.advance(timedelta(hours=2))
    step = domain.plan_escalation(INDEX, first, max_repeats=3)
    rung = domain.escalate(first, step, clock.now(), timedelta(minutes=15), sequence=f"escalation:{first.handoff_id}")
    handoffs = put(handoffs, rung)
    assert rung.role is HandoffRole.ESCALATION
    assert domain.lead_of(handoffs) == first and first.state is HandoffState.DISPATCHED

    # A co-operating unit declining does not touch the lead.
    ecology = next(h for h in handoffs if h.unit_id == "U-ECOLOGY-D01")
    out = domain.decline(INDEX, ecology, DeclineReason.NOT_OUR_JURISDICTION, clock.now(), tried_unit_ids=set(),
                         max_bounces=2, sequence=f"decline:{ecology.handoff_id}")
    handoffs = put(handoffs, out.handoff, out.successor)
    assert out.successor.role is HandoffRole.CO_OPERATING and domain.lead_of(handoffs) == first

    # The lead declining hands the lead to its replacement, named by the decline, with the same due instant.
    out = domain.decline(INDEX, first, DeclineReason.NO_CAPACITY, clock.now(), tried_unit_ids=set(),
                         max_bounces=2, sequence=f"decline:{first.handoff_id}")
    handoffs = put(handoffs, out.handoff, out.successor)
    second = domain.lead_of(handoffs)
    assert second == out.successor and out.handoff.successor_handoff_id == second.handoff_id
    assert (second.role, second.replaces_handoff_id, second.report_due_at) == (
        HandoffRole.LEAD, first.handoff_id, first.report_due_at)

    # A dispatcher's reassignment hands it on the same way.
    out = domain.reassign(INDEX, second, "cmd-D01-1", "U-HOUSING-D01", clock.now(), sequence=f"reassign:{second.handoff_id}")
    handoffs = put(handoffs, out.handoff, out.successor)
    third = domain.lead_of(handoffs)
    assert (third.unit_id, third.role, third.replaces_handoff_id) == ("U-HOUSING-D01", HandoffRole.LEAD, second.handoff_id)
    assert len(current_leads(handoffs)) == 1, "exactly one handoff holds the lead at any time"

    # Reporting and resolving does not end the responsibility: the resolved lead still leads until closure.
    third = domain.acknowledge(third, "housing-D01-1", clock.now()).handoff
    third = domain.resolve(third, "housing-D01-1", Disposition.RESOLVED, "fixed", clock.advance(600)).handoff
    handoffs = put(handoffs, third)
    assert domain.lead_of(handoffs) == third

    # Closure releases whatever is open; the lead is still the one who led, so a reopen dispatches it again.
    handoffs = [domain.release(h, clock.now()) if h.is_open else h for h in handoffs]
    assert domain.lead_of(handoffs).unit_id == "U-HOUSING-D01"


def test_a_lead_released_at_closure_still_leads_for_the_reopen() -> None:
    clock = FakeClock()
    handoffs = whistle(Category.NOISE, clock)
    out = domain.reassign(INDEX, handoffs[0], "desk-S0101-1", "U-ECOLOGY-D01", clock.now(), sequence="reassign:1")
    handoffs = put(handoffs, out.handoff, out.successor)
    closed = [domain.release(h, clock.advance(1)) if h.is_open else h for h in handoffs]
    lead = domain.lead_of(closed)
    assert (lead.unit_id, lead.state) == ("U-ECOLOGY-D01", HandoffState.RELEASED)


def test_reclassification_passes_the_lead_to_the_new_categorys_lead_and_releases_the_old_one() -> None:
    clock = FakeClock()
    handoffs = whistle(Category.NOISE, clock)  # urban management leads
    clock.advance(timedelta(minutes=5))
    plan = domain.replan(INDEX, GRID, handoffs, category=Category.THEFT, previous_category=Category.NOISE,
                         urgency=Urgency.GENERAL, previous_urgency=Urgency.GENERAL, now=clock.now(),
                         fresh_due=clock.now() + timedelta(hours=2))
    released = [domain.release(h, clock.now()) for h in plan.release]
    summoned = [domain.dispatch("inc-lead", s, category=Category.THEFT, urgency=Urgency.GENERAL, grid_id=GRID,
                                dispatched_at=clock.now(), report_due_at=due, sequence="reclassified")
                for s, due in plan.summon]
    handoffs = put(handoffs, *released, *summoned)
    assert any(h.unit_id == "U-URBAN_MANAGEMENT-D01" and h.role is HandoffRole.LEAD for h in released)
    assert (domain.lead_of(handoffs).unit_id, domain.lead_of(handoffs).role) == ("U-POL-P0001", HandoffRole.LEAD)


def test_at_the_reopen_cap_the_command_centre_takes_the_lead_from_the_resolved_lead() -> None:
    clock = FakeClock()
    handoffs = whistle(Category.THEFT, clock)
    lead = domain.acknowledge(handoffs[0], "P0001", clock.now()).handoff
    lead = domain.resolve(lead, "P0001", Disposition.RESOLVED, "", clock.advance(600)).handoff
    centre = domain.dispatch("inc-lead", domain.Summons("U-CMD-D01", domain.COMMAND, HandoffRole.LEAD, "reopen_cap"),
                             category=Category.THEFT, urgency=Urgency.GENERAL, grid_id=GRID, dispatched_at=clock.advance(60),
                             report_due_at=clock.now() + timedelta(hours=2), sequence="command-centre:2")
    assert domain.lead_of(put(handoffs, lead, centre)) == centre


def test_nobody_leads_before_the_whistle() -> None:
    assert domain.lead_of([]) is None
