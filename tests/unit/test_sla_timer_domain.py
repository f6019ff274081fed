"""Pure deadline rules of the SLA timer: ids, due instant, warnings, pause arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts.vocabulary import DeadlineKind
from services.sla_timer.domain import (
    NEXT_CLOCKS,
    DeadlineState,
    PauseRefused,
    Settlement,
    check_pause,
    deadline_id,
    is_due,
    next_fire_at,
    next_warning,
    plan_firing,
    remaining_seconds_at,
    resumed_due_at,
    settle,
    signal_event_id,
    verification_deadline_id,
    warning_instant,
)

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)
FIFTEEN_MIN = 15 * 60.0
DUE = T0 + timedelta(seconds=FIFTEEN_MIN)
FRACTIONS = (0.5, 0.8)


def test_deadline_id_is_the_same_for_every_redelivery_and_differs_per_kind_and_generation():
    assert deadline_id("h-1", DeadlineKind.REPORT) == deadline_id("h-1", DeadlineKind.REPORT)
    assert deadline_id("h-1", DeadlineKind.REPORT) != deadline_id("h-1", DeadlineKind.RESOLUTION)
    assert deadline_id("h-1", DeadlineKind.REPORT) != deadline_id("h-2", DeadlineKind.REPORT)
    assert deadline_id("h-1", DeadlineKind.REPORT, 1) != deadline_id("h-1", DeadlineKind.REPORT, 0)


def test_signal_event_ids_are_deterministic_per_deadline_and_signal():
    d = deadline_id("h-1", DeadlineKind.REPORT)
    assert signal_event_id(d, "breached") == signal_event_id(d, "breached")
    assert signal_event_id(d, "breached") != signal_event_id(d, "armed")


def test_a_deadline_is_due_at_its_instant_never_a_millisecond_before():
    assert not is_due(DUE, DUE - MS)
    assert is_due(DUE, DUE)
    assert is_due(DUE, DUE + MS)


def test_report_clock_is_followed_by_the_on_scene_and_resolution_clocks():
    assert NEXT_CLOCKS[DeadlineKind.REPORT] == (DeadlineKind.ON_SCENE, DeadlineKind.RESOLUTION)
    assert DeadlineKind.RESOLUTION not in NEXT_CLOCKS


def test_warning_instants_are_fractions_of_the_window():
    assert warning_instant(DUE, FIFTEEN_MIN, 0.5) == T0 + timedelta(minutes=7, seconds=30)
    assert warning_instant(DUE, FIFTEEN_MIN, 0.8) == T0 + timedelta(minutes=12)


def test_next_warning_skips_handled_fractions_and_ignores_nonsense_ones():
    assert next_warning(DUE, FIFTEEN_MIN, (0.8, 0.5, 1.0, 0.0), 0.0) == (0.5, T0 + timedelta(minutes=7, seconds=30))
    assert next_warning(DUE, FIFTEEN_MIN, FRACTIONS, 0.5) == (0.8, T0 + timedelta(minutes=12))
    assert next_warning(DUE, FIFTEEN_MIN, FRACTIONS, 0.8) is None
    assert next_warning(DUE, FIFTEEN_MIN, (), 0.0) is None


def test_next_fire_at_is_the_sooner_of_warning_and_due():
    assert next_fire_at(DUE, None) == DUE
    assert next_fire_at(DUE, DUE - MS) == DUE - MS


def test_plan_firing_does_nothing_before_the_first_warning():
    plan = plan_firing(DUE, FIFTEEN_MIN, FRACTIONS, 0.0, T0 + timedelta(minutes=7, seconds=30) - MS)
    assert not plan.breach and plan.warning_fraction is None
    assert plan.next_warning_at == T0 + timedelta(minutes=7, seconds=30)


def test_plan_firing_warns_once_at_each_fraction():
    first = plan_firing(DUE, FIFTEEN_MIN, FRACTIONS, 0.0, T0 + timedelta(minutes=7, seconds=30))
    assert (first.breach, first.warning_fraction, first.next_warning_at) == (False, 0.5, T0 + timedelta(minutes=12))
    second = plan_firing(DUE, FIFTEEN_MIN, FRACTIONS, first.handled_up_to, T0 + timedelta(minutes=12))
    assert (second.warning_fraction, second.next_warning_at) == (0.8, None)


def test_plan_firing_sends_only_the_latest_of_several_overdue_warnings():
    plan = plan_firing(DUE, FIFTEEN_MIN, FRACTIONS, 0.0, T0 + timedelta(minutes=13))
    assert plan.warning_fraction == 0.8 and plan.handled_up_to == 0.8 and plan.next_warning_at is None


def test_plan_firing_breaches_at_due_and_drops_overdue_warnings():
    plan = plan_firing(DUE, FIFTEEN_MIN, FRACTIONS, 0.0, DUE)
    assert plan.breach and plan.warning_fraction is None


def test_pause_keeps_the_running_time_left_and_resume_counts_it_from_the_resume():
    paused_at = T0 + timedelta(minutes=10)
    remaining = remaining_seconds_at(DUE, paused_at)
    assert remaining == 300.0
    resumed_at = paused_at + timedelta(hours=1)
    new_due = resumed_due_at(remaining, resumed_at)
    assert new_due == resumed_at + timedelta(minutes=5)
    # Warnings measured from the new due keep their place in running time: 80% is 2 min after resume.
    assert warning_instant(new_due, FIFTEEN_MIN, 0.8) == resumed_at + timedelta(minutes=2)


def test_millisecond_precision_survives_pause_arithmetic():
    paused_at = DUE - MS
    assert resumed_due_at(remaining_seconds_at(DUE, paused_at), T0 + timedelta(hours=2)) == T0 + timedelta(hours=2) + MS


def test_the_assignee_cannot_pause_its_own_clock():
    with pytest.raises(PauseRefused) as refused:
        check_pause(DeadlineState.ARMED, DUE, T0, "officer-1", ("officer-1", "aux-1"))
    assert refused.value.code == "assignee_cannot_pause"


def test_only_an_armed_deadline_before_its_due_instant_can_be_paused():
    check_pause(DeadlineState.ARMED, DUE, DUE - MS, "dispatcher-1", ("officer-1",))
    with pytest.raises(PauseRefused) as due:
        check_pause(DeadlineState.ARMED, DUE, DUE, "dispatcher-1", ("officer-1",))
    assert due.value.code == "already_due"
    for state in (DeadlineState.PAUSED, DeadlineState.FIRED, DeadlineState.CANCELLED):
        with pytest.raises(PauseRefused) as not_armed:
            check_pause(state, DUE, T0, "dispatcher-1", ())
        assert not_armed.value.code == "not_armed"


def test_an_awaited_fact_before_due_cancels_and_at_due_is_a_breach_then_late():
    assert settle(DeadlineState.ARMED, DUE, DUE - MS) is Settlement.CANCEL
    assert settle(DeadlineState.ARMED, DUE, DUE) is Settlement.BREACH_THEN_LATE
    assert settle(DeadlineState.PAUSED, DUE, DUE + MS) is Settlement.CANCEL  # a stopped clock is not due


def test_an_awaited_fact_after_firing_is_late_and_after_cancelling_does_nothing():
    assert settle(DeadlineState.FIRED, DUE, DUE) is Settlement.LATE
    assert settle(DeadlineState.FIRED, DUE, DUE + MS) is Settlement.LATE
    assert settle(DeadlineState.CANCELLED, DUE, DUE - MS) is Settlement.NOTHING
    assert settle(DeadlineState.WITHDRAWN, DUE, DUE - MS) is Settlement.NOTHING


def test_a_fact_stamped_before_due_but_consumed_after_the_firing_withdraws_the_breach():
    assert settle(DeadlineState.FIRED, DUE, DUE - MS) is Settlement.WITHDRAW


def test_each_reopen_generation_has_its_own_verification_clock():
    incident = "inc-1"
    assert verification_deadline_id(incident, 0) == deadline_id(incident, DeadlineKind.VERIFICATION, 0)
    assert len({verification_deadline_id(incident, g) for g in range(3)}) == 3
