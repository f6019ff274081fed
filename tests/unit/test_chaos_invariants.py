"""The chaos invariant checker over hand-made histories: each invariant's violation is caught, a clean run passes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.chaos.invariants import Event, Operation, check, timers_due_during_outage

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
LATER = T0 + timedelta(minutes=10)
INCIDENT = "inc-1"
HANDOFF = "h-1"
DEADLINE = "d-1"


def event(event_id: str, event_type: str, **data) -> Event:
    return Event(event_id, event_type, INCIDENT, {"incident_id": INCIDENT, **data})


def reported(event_id: str = "e-rep", incident_id: str = INCIDENT) -> Event:
    return Event(event_id, "IncidentReported", incident_id, {"incident_id": incident_id})


def dispatched(event_id: str = "e-dis") -> Event:
    return event(event_id, "HandoffDispatched", handoff_id=HANDOFF)


def armed(due_at: datetime = T0 + timedelta(seconds=4)) -> Event:
    return event("e-arm", "DeadlineArmed", deadline_id=DEADLINE, handoff_id=HANDOFF, kind="report", due_at=due_at)


def breached(event_id: str = "e-bre", fired_at: datetime = T0 + timedelta(seconds=5)) -> Event:
    return event(event_id, "DeadlineBreached", deadline_id=DEADLINE, handoff_id=HANDOFF, kind="report",
                 due_at=T0 + timedelta(seconds=4), fired_at=fired_at)


def acknowledged(at: datetime = T0 + timedelta(seconds=1)) -> Event:
    return event("e-ack", "HandoffAcknowledged", handoff_id=HANDOFF, acknowledged_at=at)


def cancelled() -> Event:
    return event("e-can", "DeadlineCancelled", deadline_id=DEADLINE, handoff_id=HANDOFF, kind="report",
                 due_at=T0 + timedelta(seconds=4))


REPORT_OK = Operation("report", 202, INCIDENT)
ACK_OK = Operation("acknowledge", 200, INCIDENT, HANDOFF)


def violations(history, events) -> list[str]:
    return check(history, events, checked_at=LATER).violations


def test_a_clean_acknowledged_incident_has_no_violations():
    events = [reported(), dispatched(), armed(), acknowledged(), cancelled()]
    assert violations([REPORT_OK, ACK_OK], events) == []


def test_redelivered_copies_of_one_event_are_counted_not_violations():
    verdict = check([REPORT_OK], [reported(), reported(), reported(), dispatched()], checked_at=LATER)
    assert verdict.ok
    assert verdict.duplicate_copies == 2


def test_an_incident_nobody_was_told_about_is_a_violation():
    found = violations([Operation("report", None)], [reported()])
    assert any("no report of it was acknowledged" in v for v in found)


def test_an_acknowledged_report_without_its_event_is_lost():
    found = violations([REPORT_OK], [])
    assert any("lost event: report of inc-1" in v for v in found)


def test_an_acknowledgement_answered_2xx_without_its_event_is_lost():
    found = violations([REPORT_OK, ACK_OK], [reported(), dispatched()])
    assert any("lost event: acknowledge of h-1" in v for v in found)


def test_a_refused_command_promises_no_event():
    assert violations([REPORT_OK, Operation("acknowledge", 409, INCIDENT, HANDOFF)], [reported(), dispatched()]) == []


def test_two_event_ids_for_one_handoff_are_a_duplicated_side_effect():
    found = violations([REPORT_OK], [reported(), dispatched("e-dis-1"), dispatched("e-dis-2")])
    assert any("2 different HandoffDispatched events for h-1" in v for v in found)


def test_a_deadline_that_fires_twice_is_a_duplicated_side_effect():
    found = violations([REPORT_OK], [reported(), armed(), breached("e-bre-1"), breached("e-bre-2")])
    assert any("different DeadlineBreached events for d-1" in v for v in found)


def test_a_deadline_firing_before_it_is_due_is_a_violation():
    found = violations([REPORT_OK], [reported(), armed(), breached(fired_at=T0 + timedelta(seconds=3))])
    assert any("fired early" in v for v in found)


def test_a_breach_after_an_acknowledgement_in_time_is_a_violation():
    events = [reported(), dispatched(), armed(), acknowledged(T0 + timedelta(seconds=2)), breached()]
    found = violations([REPORT_OK, ACK_OK], events)
    assert any("breached though handoff h-1 reported" in v for v in found)


def withdrawn() -> Event:
    return event("e-wd", "DeadlineBreachWithdrawn", deadline_id=DEADLINE, handoff_id=HANDOFF, kind="report",
                 due_at=T0 + timedelta(seconds=4))


def test_a_breach_of_an_acknowledgement_in_time_that_is_withdrawn_is_not_a_violation_and_is_counted():
    events = [reported(), dispatched(), armed(), acknowledged(T0 + timedelta(seconds=2)), breached(), withdrawn()]
    verdict = check([REPORT_OK, ACK_OK], events, checked_at=LATER)
    assert verdict.violations == [] and verdict.withdrawn_breaches == 1


def test_withdrawing_a_breach_of_a_late_acknowledgement_is_a_violation():
    events = [reported(), dispatched(), armed(), breached(), acknowledged(T0 + timedelta(seconds=9)), withdrawn()]
    found = violations([REPORT_OK, ACK_OK], events)
    assert any("withdrawn though" in v for v in found)


def test_a_withdrawal_before_its_breach_is_out_of_order():
    events = [reported(), dispatched(), armed(), acknowledged(T0 + timedelta(seconds=2)), withdrawn(), breached()]
    found = violations([REPORT_OK, ACK_OK], events)
    assert any("out of order: DeadlineBreachWithdrawn" in v for v in found)


def test_a_breach_after_a_late_acknowledgement_is_fine():
    events = [reported(), dispatched(), armed(), breached(), acknowledged(T0 + timedelta(seconds=9))]
    assert violations([REPORT_OK, ACK_OK], events) == []


def test_a_due_deadline_that_neither_fired_nor_was_cancelled_is_lost():
    found = violations([REPORT_OK], [reported(), armed()])
    assert any("neither fired nor cancelled" in v for v in found)


def test_a_deadline_not_yet_due_may_still_be_pending():
    assert violations([REPORT_OK], [reported(), dispatched(), armed(due_at=LATER + timedelta(minutes=5))]) == []


def test_an_acknowledgement_before_its_dispatch_is_out_of_order():
    events = [reported(), acknowledged(), dispatched(), armed(), cancelled()]
    found = violations([REPORT_OK, ACK_OK], events)
    assert any("HandoffAcknowledged of handoff_id h-1 without an earlier HandoffDispatched" in v for v in found)


def test_a_cancellation_of_a_deadline_never_armed_is_a_violation():
    found = violations([REPORT_OK], [reported(), dispatched(), cancelled()])
    assert any("never armed" in v for v in found)


def test_feedback_accepted_but_never_closed_is_unexplained():
    found = violations([REPORT_OK, Operation("feedback", 200, INCIDENT)], [reported(), event("e-fb", "FeedbackGiven")])
    assert any("got feedback (2xx) but never closed" in v for v in found)


def test_an_incident_closed_without_feedback_is_unexplained():
    found = violations([REPORT_OK], [reported(), event("e-cl", "IncidentClosed")])
    assert any("closed though the harness never gave feedback" in v for v in found)


# --- every incident ends closed or still legitimately open ---------------------------------------


def classified() -> Event:
    return event("e-cls", "IncidentClassified")


def lead(handoff_id: str = HANDOFF, event_id: str = "e-dis", **extra) -> Event:
    return event(event_id, "HandoffDispatched", handoff_id=handoff_id, role="lead", **extra)


def resolved_handoff(handoff_id: str = HANDOFF, event_id: str = "e-hres") -> Event:
    return event(event_id, "HandoffResolved", handoff_id=handoff_id)


def acked(handoff_id: str = HANDOFF) -> Event:
    return event(f"e-ack-{handoff_id}", "HandoffAcknowledged", handoff_id=handoff_id, acknowledged_at=T0)


def test_a_closed_incident_is_counted_closed():
    events = [reported(), classified(), lead(), acked(), resolved_handoff(), event("e-res", "IncidentResolved"),
              event("e-ver", "IncidentVerified"), event("e-fb", "FeedbackGiven"), event("e-cl", "IncidentClosed")]
    history = [REPORT_OK, Operation("verify", 200, INCIDENT), Operation("feedback", 200, INCIDENT)]
    verdict = check(history, events, checked_at=LATER)
    assert verdict.ok, verdict.violations
    assert (verdict.closed_incidents, verdict.open_incidents) == (1, 0)


def test_an_incident_whose_unit_has_not_resolved_is_legitimately_open():
    verdict = check([REPORT_OK, ACK_OK], [reported(), classified(), lead(), acknowledged()], checked_at=LATER)
    assert verdict.ok and verdict.open_incidents == 1


def test_an_incident_awaiting_verification_or_feedback_is_legitimately_open():
    resolved = [reported(), classified(), lead(), acked(), resolved_handoff(), event("e-res", "IncidentResolved")]
    assert violations([REPORT_OK], resolved) == []
    verified = [*resolved, event("e-ver", "IncidentVerified")]
    assert violations([REPORT_OK, Operation("verify", 200, INCIDENT)], verified) == []


def test_an_incident_never_classified_is_stuck():
    found = violations([REPORT_OK], [reported()])
    assert any("inc-1 stuck: never classified" in v for v in found)


def test_an_incident_classified_but_never_dispatched_is_stuck():
    found = violations([REPORT_OK], [reported(), classified()])
    assert any("inc-1 stuck: classified but never dispatched" in v for v in found)


def test_a_young_incident_is_not_judged_stuck_yet():
    young = Operation("report", 202, INCIDENT, at=LATER - timedelta(seconds=3))
    old = Operation("report", 202, INCIDENT, at=LATER - timedelta(minutes=1))
    assert violations([young], [reported()]) == []
    assert any("stuck" in v for v in violations([old], [reported()]))


def test_every_unit_resolved_but_the_incident_never_resolved_is_stuck():
    co_op = event("e-dis-2", "HandoffDispatched", handoff_id="h-2", role="co_operating")
    events = [reported(), classified(), lead(), co_op, acked(), acked("h-2"), resolved_handoff(),
              resolved_handoff("h-2", "e-hres-2")]
    found = violations([REPORT_OK], events)
    assert any("never resolved (IncidentResolved)" in v for v in found)


def test_an_open_escalation_rung_does_not_hold_a_resolved_incident():
    rung = event("e-esc", "HandoffDispatched", handoff_id="h-esc", role="escalation")
    found = violations([REPORT_OK], [reported(), classified(), lead(), rung, acked(), resolved_handoff()])
    assert any("never resolved (IncidentResolved)" in v for v in found)


def test_an_unresolved_co_operating_unit_still_holds_the_incident():
    co_op = event("e-dis-2", "HandoffDispatched", handoff_id="h-2", role="co_operating")
    assert violations([REPORT_OK], [reported(), classified(), lead(), co_op, acked(), resolved_handoff()]) == []


def test_an_incident_whose_every_handoff_was_withdrawn_is_stuck():
    events = [reported(), classified(), lead(), event("e-rel", "HandoffReleased", handoff_id=HANDOFF)]
    found = violations([REPORT_OK], events)
    assert any("no unit holds it" in v for v in found)


def test_an_escalation_rung_chasing_a_breached_lead_leaves_the_lead_holding_the_incident():
    # Found by sigterm-each-service: every unit reported late, their rungs were released, and the
    # checker had taken the rungs for replacements, so nobody seemed to hold the incident.
    rung = event("e-esc", "HandoffDispatched", handoff_id="h-esc", role="escalation", replaces_handoff_id=HANDOFF)
    released = event("e-rel", "HandoffReleased", handoff_id="h-esc")
    assert violations([REPORT_OK], [reported(), classified(), lead(), rung, acked(), released]) == []
    lead_done = [reported(), classified(), lead(), rung, acked(), released, resolved_handoff()]
    assert any("never resolved (IncidentResolved)" in v for v in violations([REPORT_OK], lead_done))


def test_a_replaced_handoff_gives_way_to_its_successor():
    successor = lead("h-2", "e-dis-2", replaces_handoff_id=HANDOFF)
    assert violations([REPORT_OK], [reported(), classified(), lead(), successor]) == []
    done = [acked("h-2"), resolved_handoff("h-2", "e-hres-2")]
    found = violations([REPORT_OK], [reported(), classified(), lead(), successor, *done])
    assert any("never resolved (IncidentResolved)" in v for v in found)


# --- timers due during an outage ------------------------------------------------------------------

DOWN, UP = T0 + timedelta(seconds=2), T0 + timedelta(seconds=40)


def test_a_timer_due_during_the_outage_that_fires_once_after_recovery_is_fine():
    late = breached(fired_at=UP + timedelta(seconds=3))
    result = timers_due_during_outage([armed(), late, late], DOWN, UP)
    assert result.violations == [] and (result.due, result.fired_after) == (1, 1)


def test_a_timer_due_during_the_outage_that_fired_before_recovery_is_a_violation():
    result = timers_due_during_outage([armed(), breached(fired_at=T0 + timedelta(seconds=5))], DOWN, UP)
    assert any("before the broker was back" in v for v in result.violations)


def test_a_timer_due_during_the_outage_that_fires_twice_or_never_is_a_violation():
    twice = timers_due_during_outage(
        [armed(), breached("e-1", fired_at=UP + timedelta(seconds=1)), breached("e-2", fired_at=UP + timedelta(seconds=2))],
        DOWN, UP,
    )
    assert any("2 breaches" in v for v in twice.violations)
    never = timers_due_during_outage([armed()], DOWN, UP)
    assert any("neither fired nor cancelled" in v for v in never.violations)


def test_a_timer_due_during_the_outage_cancelled_by_an_acknowledgement_is_fine():
    result = timers_due_during_outage([armed(), cancelled()], DOWN, UP)
    assert result.violations == [] and result.cancelled == 1


def test_timers_due_outside_the_outage_are_not_counted():
    result = timers_due_during_outage([armed(due_at=UP + timedelta(seconds=30))], DOWN, UP)
    assert result.due == 0 and result.violations == []


def test_an_out_of_order_handoff_is_reported_once_by_its_handoff_not_again_by_its_incident():
    found = [v for v in violations([REPORT_OK], [reported(), classified(), lead(), resolved_handoff(), acked()])
             if "out of order" in v]
    assert found == ["out of order: HandoffResolved of handoff_id h-1 without an earlier HandoffAcknowledged"]
