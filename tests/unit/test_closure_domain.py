"""Closure domain: readiness from handoff facts, verification, feedback, reopening and the cap."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from contracts.commands import GiveFeedback, VerifyIncident
from contracts.events import (
    FeedbackGiven,
    HandoffDeclined,
    HandoffDispatched,
    HandoffReassigned,
    HandoffReleased,
    HandoffResolved,
    IncidentClosed,
    IncidentEscalatedToCommandCentre,
    IncidentReopened,
    IncidentReported,
    IncidentResolved,
    IncidentVerified,
    Location,
    VerificationRejected,
)
from contracts.vocabulary import (
    Category,
    ClosureOutcome,
    DeclineReason,
    Disposition,
    HandoffRole,
    Satisfaction,
    Urgency,
)
from services.closure.domain import (
    ActorNotPermitted,
    ClosureStatus,
    IncidentClosure,
    InvalidClosureCommand,
    WrongClosureState,
    outcome_for,
)
from services.runtime.clock import FakeClock

REPORTER = "resident-1"
GRID_WORKER = "W0001"
WORKERS = (GRID_WORKER,)
SUPERVISOR = "sup-1"


class Story:
    """Builds one incident's facts with a FakeClock, so tests read as the incident's history."""

    def __init__(self, max_reopens: int = 2) -> None:
        self.clock = FakeClock()
        self.incident_id = str(uuid.uuid4())
        self.closure = IncidentClosure(self.incident_id)
        self.max_reopens = max_reopens

    def report(self) -> list:
        return self.closure.apply(
            IncidentReported(
                incident_id=self.incident_id,
                grid_id="G0001",
                reporter_id=REPORTER,
                description="楼道堆放杂物",
                location=Location(address="1 Road"),
                reported_at=self.clock.now(),
            )
        )

    def dispatch(self, handoff_id: str, role: HandoffRole, replaces: str | None = None) -> list:
        now = self.clock.advance(60)
        return self.closure.apply(
            HandoffDispatched(
                incident_id=self.incident_id,
                handoff_id=handoff_id,
                unit_id=f"U-{handoff_id}",
                department="police",
                role=role,
                category=Category.NOISE,
                urgency=Urgency.GENERAL,
                grid_id="G0001",
                dispatched_at=now,
                report_due_at=now + timedelta(hours=2),
                replaces_handoff_id=replaces,
            )
        )

    def resolve(self, handoff_id: str, role: HandoffRole, disposition: Disposition = Disposition.RESOLVED) -> list:
        return self.closure.apply(
            HandoffResolved(
                incident_id=self.incident_id,
                handoff_id=handoff_id,
                unit_id=f"U-{handoff_id}",
                role=role,
                actor_id="P0001",
                disposition=disposition,
                resolved_at=self.clock.advance(600),
            )
        )

    def release(self, handoff_id: str) -> list:
        return self.closure.apply(HandoffReleased(incident_id=self.incident_id, handoff_id=handoff_id, unit_id="U"))

    def verify(self, confirmed: bool = True, actor: str = GRID_WORKER, reason: str = "") -> list:
        command = VerifyIncident(actor_id=actor, confirmed=confirmed, reason=reason)
        return self.closure.verify(
            command, grid_worker_ids=WORKERS, now=self.clock.advance(60), max_reopens=self.max_reopens,
            supervisor_ids=(SUPERVISOR,),
        )

    def feedback(self, satisfaction: Satisfaction, actor: str = REPORTER) -> list:
        command = GiveFeedback(actor_id=actor, satisfaction=satisfaction)
        return self.closure.give_feedback(
            command, grid_worker_ids=WORKERS, now=self.clock.advance(60), max_reopens=self.max_reopens
        )

    def resolved_and_verified(self, disposition: Disposition = Disposition.RESOLVED) -> None:
        self.report()
        self.dispatch("lead", HandoffRole.LEAD)
        self.resolve("lead", HandoffRole.LEAD, disposition)
        self.verify()


def types(events: list) -> list[type]:
    return [type(e) for e in events]


# --- readiness --------------------------------------------------------------------------------


def test_lead_resolution_alone_makes_an_incident_without_co_ops_ready() -> None:
    story = Story()
    story.report()
    assert story.dispatch("lead", HandoffRole.LEAD) == []
    events = story.resolve("lead", HandoffRole.LEAD)
    assert types(events) == [IncidentResolved]
    assert events[0].disposition is Disposition.RESOLVED
    assert events[0].resolved_at == story.closure.handoffs["lead"].resolved_at
    assert story.closure.status is ClosureStatus.AWAITING_VERIFICATION


def test_an_unresolved_co_operating_handoff_blocks_readiness() -> None:
    story = Story()
    story.dispatch("lead", HandoffRole.LEAD)
    story.dispatch("co", HandoffRole.CO_OPERATING)
    assert story.resolve("lead", HandoffRole.LEAD) == []
    assert story.closure.status is ClosureStatus.OPEN
    events = story.resolve("co", HandoffRole.CO_OPERATING)
    assert types(events) == [IncidentResolved]
    assert events[0].resolved_at == story.closure.handoffs["co"].resolved_at  # the last one to finish


def test_a_released_co_operating_handoff_does_not_block() -> None:
    story = Story()
    story.dispatch("lead", HandoffRole.LEAD)
    story.dispatch("co", HandoffRole.CO_OPERATING)
    story.resolve("lead", HandoffRole.LEAD)
    assert types(story.release("co")) == [IncidentResolved]


def test_co_operating_resolution_without_the_lead_is_not_ready() -> None:
    story = Story()
    story.dispatch("lead", HandoffRole.LEAD)
    story.dispatch("co", HandoffRole.CO_OPERATING)
    assert story.resolve("co", HandoffRole.CO_OPERATING) == []
    assert not story.closure.is_ready_for_verification()


def test_escalation_handoffs_do_not_block_readiness() -> None:
    story = Story()
    story.dispatch("lead", HandoffRole.LEAD)
    story.dispatch("cmd", HandoffRole.ESCALATION)
    assert types(story.resolve("lead", HandoffRole.LEAD)) == [IncidentResolved]


def test_no_lead_means_never_ready() -> None:
    story = Story()
    story.dispatch("co", HandoffRole.CO_OPERATING)
    assert story.resolve("co", HandoffRole.CO_OPERATING) == []


@pytest.mark.parametrize("withdraw", ["declined", "reassigned", "replaced"])
def test_a_replaced_lead_no_longer_counts_and_its_replacement_must_resolve(withdraw: str) -> None:
    story = Story()
    story.dispatch("lead-1", HandoffRole.LEAD)
    if withdraw == "declined":
        story.closure.apply(
            HandoffDeclined(
                incident_id=story.incident_id,
                handoff_id="lead-1",
                unit_id="U",
                actor_id="P1",
                reason_code=DeclineReason.NOT_OUR_AREA,
                declined_at=story.clock.now(),
            )
        )
        story.dispatch("lead-2", HandoffRole.LEAD)
    elif withdraw == "reassigned":
        story.closure.apply(
            HandoffReassigned(
                incident_id=story.incident_id,
                handoff_id="lead-1",
                from_unit_id="U1",
                to_unit_id="U2",
                new_handoff_id="lead-2",
                actor_id="dispatcher",
            )
        )
        story.dispatch("lead-2", HandoffRole.LEAD)
    else:
        story.dispatch("lead-2", HandoffRole.LEAD, replaces="lead-1")
    assert not story.closure.handoffs["lead-1"].counts
    assert story.closure.current_lead().handoff_id == "lead-2"
    assert types(story.resolve("lead-2", HandoffRole.LEAD)) == [IncidentResolved]


def test_a_replaced_co_operating_handoff_no_longer_blocks() -> None:
    story = Story()
    story.dispatch("lead", HandoffRole.LEAD)
    story.dispatch("co-1", HandoffRole.CO_OPERATING)
    story.dispatch("co-2", HandoffRole.CO_OPERATING, replaces="co-1")
    assert story.resolve("lead", HandoffRole.LEAD) == []  # co-2 still open
    assert types(story.resolve("co-2", HandoffRole.CO_OPERATING)) == [IncidentResolved]


def test_an_escalation_rung_chasing_a_breached_lead_does_not_replace_it() -> None:
    # Found by the chaos suite: routing dispatches the rung with replaces_handoff_id = the breached
    # handoff (its chain link); closure took that for a replacement, withdrew the lead, and an
    # incident whose lead reported late and resolved could never be resolved (nor closed).
    story = Story()
    story.dispatch("lead", HandoffRole.LEAD)
    story.dispatch("desk", HandoffRole.ESCALATION, replaces="lead")
    assert story.closure.handoffs["lead"].counts
    assert types(story.resolve("lead", HandoffRole.LEAD)) == [IncidentResolved]


def test_a_late_resolution_of_a_replaced_lead_does_not_make_the_incident_ready() -> None:
    story = Story()
    story.dispatch("lead-1", HandoffRole.LEAD)
    story.dispatch("lead-2", HandoffRole.LEAD, replaces="lead-1")
    assert story.resolve("lead-1", HandoffRole.LEAD) == []


def test_out_of_order_resolution_before_dispatch_and_report_is_still_ready() -> None:
    story = Story()
    # Routing facts overtook intake (different topics); the resolution even names its role.
    assert types(story.resolve("lead", HandoffRole.LEAD)) == [IncidentResolved]
    story.dispatch("lead", HandoffRole.LEAD)  # the late dispatch neither resets nor re-emits
    assert story.report() == []
    assert story.closure.status is ClosureStatus.AWAITING_VERIFICATION
    assert story.closure.reporter_id == REPORTER


def test_release_before_dispatch_still_withdraws_the_handoff() -> None:
    story = Story()
    story.dispatch("lead", HandoffRole.LEAD)
    story.release("co")
    story.dispatch("co", HandoffRole.CO_OPERATING)
    assert types(story.resolve("lead", HandoffRole.LEAD)) == [IncidentResolved]


def test_the_same_resolution_twice_emits_incident_resolved_once() -> None:
    story = Story()
    story.dispatch("lead", HandoffRole.LEAD)
    assert types(story.resolve("lead", HandoffRole.LEAD)) == [IncidentResolved]
    assert story.resolve("lead", HandoffRole.LEAD) == []


# --- verification -----------------------------------------------------------------------------


def test_confirmed_verification_awaits_feedback() -> None:
    story = Story()
    story.report()
    story.dispatch("lead", HandoffRole.LEAD)
    story.resolve("lead", HandoffRole.LEAD)
    events = story.verify()
    assert types(events) == [IncidentVerified]
    assert story.closure.status is ClosureStatus.AWAITING_FEEDBACK
    assert story.closure.verified_by == GRID_WORKER


def test_the_reporter_may_verify_too() -> None:
    story = Story()
    story.report()
    story.dispatch("lead", HandoffRole.LEAD)
    story.resolve("lead", HandoffRole.LEAD)
    assert types(story.verify(actor=REPORTER)) == [IncidentVerified]


def test_rejected_verification_reopens_and_needs_a_new_lead_resolution() -> None:
    story = Story()
    story.report()
    story.dispatch("lead", HandoffRole.LEAD)
    story.resolve("lead", HandoffRole.LEAD)
    events = story.verify(confirmed=False, reason="杂物还在")
    assert types(events) == [VerificationRejected, IncidentReopened]
    assert events[1].reopen_count == 1
    assert story.closure.status is ClosureStatus.REOPENED
    # The old lead resolution belongs to the refused round: nothing is ready until a new one.
    assert not story.closure.is_ready_for_verification()
    story.dispatch("lead-again", HandoffRole.LEAD)
    assert types(story.resolve("lead-again", HandoffRole.LEAD)) == [IncidentResolved]


def test_a_reopened_lead_resolved_again_under_the_same_handoff_id_counts() -> None:
    story = Story()
    story.resolved_and_verified()
    story.feedback(Satisfaction.NOT_SATISFIED)
    assert types(story.resolve("lead", HandoffRole.LEAD)) == [IncidentResolved]


def test_rejection_without_reason_is_invalid() -> None:
    story = Story()
    story.report()
    story.dispatch("lead", HandoffRole.LEAD)
    story.resolve("lead", HandoffRole.LEAD)
    with pytest.raises(InvalidClosureCommand):
        story.verify(confirmed=False, reason="  ")
    assert story.closure.status is ClosureStatus.AWAITING_VERIFICATION


def test_a_stranger_may_not_verify() -> None:
    story = Story()
    story.report()
    story.dispatch("lead", HandoffRole.LEAD)
    story.resolve("lead", HandoffRole.LEAD)
    with pytest.raises(ActorNotPermitted):
        story.verify(actor="someone-else")


def test_verification_before_resolution_is_the_wrong_state() -> None:
    story = Story()
    story.report()
    story.dispatch("lead", HandoffRole.LEAD)
    with pytest.raises(WrongClosureState):
        story.verify()


def test_the_same_verification_twice_has_one_effect() -> None:
    story = Story()
    story.resolved_and_verified()
    assert story.verify() == []
    assert story.closure.status is ClosureStatus.AWAITING_FEEDBACK


def test_a_different_verification_after_one_was_applied_is_the_wrong_state() -> None:
    story = Story()
    story.resolved_and_verified()
    with pytest.raises(WrongClosureState):
        story.verify(confirmed=False, reason="changed my mind")


# --- feedback and closing ---------------------------------------------------------------------


@pytest.mark.parametrize("satisfaction", [Satisfaction.SATISFIED, Satisfaction.BASICALLY_SATISFIED])
def test_satisfied_feedback_closes_a_resolved_incident_as_resolved(satisfaction: Satisfaction) -> None:
    story = Story()
    story.resolved_and_verified()
    events = story.feedback(satisfaction)
    assert types(events) == [FeedbackGiven, IncidentClosed]
    assert events[1].outcome is ClosureOutcome.RESOLVED
    assert events[1].satisfaction is satisfaction
    assert story.closure.status is ClosureStatus.CLOSED


@pytest.mark.parametrize(
    ("disposition", "outcome"),
    [
        (Disposition.UNFOUNDED, ClosureOutcome.CLOSED_UNRESOLVED),
        (Disposition.NOT_RESOLVABLE, ClosureOutcome.CLOSED_UNRESOLVED),
        (Disposition.REFERRED, ClosureOutcome.CLOSED_UNRESOLVED),
        (Disposition.DUPLICATE, ClosureOutcome.DUPLICATE),
    ],
)
def test_a_lead_disposition_other_than_resolved_never_closes_as_resolved(
    disposition: Disposition, outcome: ClosureOutcome
) -> None:
    story = Story()
    story.resolved_and_verified(disposition)
    closed = story.feedback(Satisfaction.SATISFIED)[-1]
    assert closed.outcome is outcome
    assert closed.outcome is not ClosureOutcome.RESOLVED
    assert outcome_for(disposition) is outcome


def test_feedback_before_verification_is_refused_with_a_clear_reason() -> None:
    story = Story()
    story.report()
    story.dispatch("lead", HandoffRole.LEAD)
    story.resolve("lead", HandoffRole.LEAD)
    with pytest.raises(WrongClosureState, match="verified"):
        story.feedback(Satisfaction.SATISFIED)


def test_the_grid_worker_may_give_feedback_on_the_reporters_behalf_but_a_stranger_may_not() -> None:
    story = Story()
    story.resolved_and_verified()
    with pytest.raises(ActorNotPermitted):
        story.feedback(Satisfaction.SATISFIED, actor="stranger")
    assert types(story.feedback(Satisfaction.SATISFIED, actor=GRID_WORKER)) == [FeedbackGiven, IncidentClosed]


def test_not_satisfied_reopens() -> None:
    story = Story()
    story.resolved_and_verified()
    events = story.feedback(Satisfaction.NOT_SATISFIED)
    assert types(events) == [FeedbackGiven, IncidentReopened]
    assert events[1].reopen_count == 1
    assert story.closure.status is ClosureStatus.REOPENED
    assert story.closure.verified_by is None


def test_the_same_feedback_twice_has_one_effect() -> None:
    story = Story()
    story.resolved_and_verified()
    story.feedback(Satisfaction.NOT_SATISFIED)
    assert story.feedback(Satisfaction.NOT_SATISFIED) == []
    assert story.closure.reopen_count == 1


def test_the_reopen_loop_hits_the_cap_and_escalates_to_the_command_centre() -> None:
    story = Story(max_reopens=2)
    story.resolved_and_verified()
    for round_number in (1, 2):
        assert types(story.feedback(Satisfaction.NOT_SATISFIED)) == [FeedbackGiven, IncidentReopened]
        assert story.closure.reopen_count == round_number
        story.resolve("lead", HandoffRole.LEAD)
        story.verify()
    events = story.feedback(Satisfaction.NOT_SATISFIED)
    assert types(events) == [FeedbackGiven, IncidentEscalatedToCommandCentre]
    escalation = events[1]
    assert (escalation.grid_id, escalation.reopen_count) == ("G0001", 2)
    assert "not satisfied" in escalation.reason
    assert story.closure.escalated and story.closure.status is ClosureStatus.ESCALATED
    assert story.closure.reopen_count == 2  # an escalation is not one more reopen
    assert story.closure.outcome is None


def test_after_the_escalation_only_the_command_centres_resolution_makes_it_ready() -> None:
    story = Story(max_reopens=0)
    story.report()
    story.dispatch("lead", HandoffRole.LEAD)
    story.dispatch("co", HandoffRole.CO_OPERATING)
    story.resolve("lead", HandoffRole.LEAD)
    story.resolve("co", HandoffRole.CO_OPERATING)
    assert types(story.verify(confirmed=False, reason="没修好")) == [VerificationRejected, IncidentEscalatedToCommandCentre]
    # Any later fact settles readiness again: the refused round's resolution must not count.
    assert story.release("an-escalation-rung") == []
    assert story.dispatch("cmd", HandoffRole.LEAD) == []  # routing's command-centre handoff
    with pytest.raises(WrongClosureState, match="escalated"):
        story.verify()
    assert types(story.resolve("cmd", HandoffRole.LEAD)) == [IncidentResolved]
    assert story.closure.status is ClosureStatus.AWAITING_VERIFICATION
    story.verify()
    closed = story.feedback(Satisfaction.SATISFIED)[-1]
    assert (closed.outcome, story.closure.escalated) == (ClosureOutcome.RESOLVED, True)


def test_refused_again_after_the_command_centres_round_closes_unresolved() -> None:
    story = Story(max_reopens=1)
    story.resolved_and_verified()
    assert types(story.feedback(Satisfaction.NOT_SATISFIED)) == [FeedbackGiven, IncidentReopened]
    story.resolve("lead", HandoffRole.LEAD)
    story.verify()
    assert types(story.feedback(Satisfaction.NOT_SATISFIED)) == [FeedbackGiven, IncidentEscalatedToCommandCentre]
    story.dispatch("cmd", HandoffRole.LEAD)
    story.resolve("cmd", HandoffRole.LEAD)
    story.verify()
    events = story.feedback(Satisfaction.NOT_SATISFIED)
    assert types(events) == [FeedbackGiven, IncidentClosed]
    assert (events[1].outcome, events[1].satisfaction) == (ClosureOutcome.CLOSED_UNRESOLVED, Satisfaction.NOT_SATISFIED)
    assert story.closure.status is ClosureStatus.CLOSED and story.closure.reopen_count == 1


def test_a_rejected_verification_at_the_cap_also_escalates() -> None:
    story = Story(max_reopens=0)
    story.report()
    story.dispatch("lead", HandoffRole.LEAD)
    story.resolve("lead", HandoffRole.LEAD)
    events = story.verify(confirmed=False, reason="not fixed")
    assert types(events) == [VerificationRejected, IncidentEscalatedToCommandCentre]
    assert "verification rejected: not fixed" in events[1].reason
    assert story.closure.escalated


def test_a_supervisor_may_verify_but_not_give_the_reporters_feedback() -> None:
    story = Story()
    story.report()
    story.dispatch("lead", HandoffRole.LEAD)
    story.resolve("lead", HandoffRole.LEAD)
    events = story.verify(actor=SUPERVISOR)
    assert types(events) == [IncidentVerified] and story.closure.verified_by == SUPERVISOR
    with pytest.raises(ActorNotPermitted):
        story.feedback(Satisfaction.SATISFIED, actor=SUPERVISOR)
    with pytest.raises(ActorNotPermitted):
        story.closure.verify(
            VerifyIncident(actor_id="sup-2", confirmed=True), grid_worker_ids=WORKERS, now=story.clock.now(),
            max_reopens=2, supervisor_ids=(SUPERVISOR,),
        )


def test_facts_after_closing_do_not_reopen_or_re_resolve() -> None:
    story = Story()
    story.resolved_and_verified()
    story.feedback(Satisfaction.SATISFIED)
    story.dispatch("late", HandoffRole.LEAD)
    assert story.resolve("late", HandoffRole.LEAD) == []
    assert story.closure.status is ClosureStatus.CLOSED


def test_rejections_and_dissatisfaction_share_one_reopen_cap() -> None:
    story = Story(max_reopens=2)
    story.resolved_and_verified()
    assert types(story.feedback(Satisfaction.NOT_SATISFIED)) == [FeedbackGiven, IncidentReopened]
    story.resolve("lead", HandoffRole.LEAD)
    assert types(story.verify(confirmed=False, reason="still blocked")) == [VerificationRejected, IncidentReopened]
    assert story.closure.reopen_count == 2
    story.resolve("lead", HandoffRole.LEAD)
    events = story.verify(confirmed=False, reason="still blocked, third time")
    assert types(events) == [VerificationRejected, IncidentEscalatedToCommandCentre]
    assert story.closure.escalated and story.closure.reopen_count == 2


def test_a_reopened_incident_takes_no_feedback_or_verification_until_the_lead_resolves_again() -> None:
    story = Story()
    story.resolved_and_verified()
    story.feedback(Satisfaction.NOT_SATISFIED)
    with pytest.raises(WrongClosureState, match="reopened"):
        story.feedback(Satisfaction.SATISFIED)
    with pytest.raises(WrongClosureState, match="reopened"):
        story.verify()


def test_after_a_reopen_a_satisfied_close_is_resolved_and_keeps_the_reopen_count() -> None:
    story = Story()
    story.resolved_and_verified()
    story.feedback(Satisfaction.NOT_SATISFIED)
    story.resolve("lead", HandoffRole.LEAD)
    story.verify()
    closed = story.feedback(Satisfaction.BASICALLY_SATISFIED)[-1]
    assert (closed.outcome, story.closure.reopen_count, story.closure.escalated) == (ClosureOutcome.RESOLVED, 1, False)


def test_a_closed_incident_refuses_a_different_verification_or_feedback() -> None:
    story = Story()
    story.resolved_and_verified()
    story.feedback(Satisfaction.SATISFIED)
    with pytest.raises(WrongClosureState, match="closed"):
        story.feedback(Satisfaction.NOT_SATISFIED)
    with pytest.raises(WrongClosureState, match="closed"):
        story.verify(confirmed=False, reason="too late")
