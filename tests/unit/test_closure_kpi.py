"""The KPI definitions, pure: fact merges and figures, on hand-made facts and on a full generated history."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from contracts.envelope import Envelope
from contracts.events import (
    DeadlineBreached,
    FeedbackGiven,
    HandoffAcknowledged,
    HandoffDispatched,
    HandoffResolved,
    IncidentReopened,
    IncidentResolved,
)
from contracts.vocabulary import Category, DeadlineKind, Disposition, HandoffRole, Satisfaction, Urgency
from services.closure.kpi import (
    HANDOFF_EVENTS,
    TIME_TO_REPORT_BUCKETS,
    INCIDENT_EVENTS,
    BreachFact,
    Dimension,
    FeedbackFact,
    HandoffFact,
    IncidentFact,
    KpiFacts,
    compute_kpis,
    durations,
    grid_areas,
    merge_into_handoff,
    merge_into_incident,
    report_was_owed,
    row_as_dict,
    standalone_fact,
    time_to_report_histogram,
)
from tests.component.test_closure_kpi_history import (
    AS_OF,
    DIMENSIONS,
    assert_same_figures,
    expected_rows,
    generate_history,
)
from tests.support import envelope_for

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


def project(envelopes: list[Envelope]) -> KpiFacts:
    """What the store does with each event, in memory: merge into the incident/handoff, add standalone facts."""
    incidents: dict[str, IncidentFact] = {}
    handoffs: dict[str, HandoffFact] = {}
    feedback: dict[str, FeedbackFact] = {}
    breaches: dict[str, BreachFact] = {}
    for envelope in envelopes:
        event = envelope.data
        fact = standalone_fact(envelope)
        if isinstance(fact, FeedbackFact):
            feedback[fact.event_id] = fact
        elif isinstance(fact, BreachFact):
            breaches[fact.deadline_id] = fact
        if isinstance(event, INCIDENT_EVENTS):
            incidents[event.incident_id] = merge_into_incident(
                incidents.get(event.incident_id, IncidentFact(event.incident_id)), event
            )
        if isinstance(event, HANDOFF_EVENTS):
            current = handoffs.get(event.handoff_id, HandoffFact(event.handoff_id, event.incident_id))
            handoffs[event.handoff_id] = merge_into_handoff(current, event, envelope.occurred_at)
    return KpiFacts(list(incidents.values()), list(handoffs.values()), list(feedback.values()), list(breaches.values()))


@pytest.fixture(scope="module")
def history():
    return generate_history(incidents=300, seed=11)


@pytest.mark.parametrize("dimension", DIMENSIONS)
def test_every_kpi_on_a_generated_history_matches_its_record(history, dimension):
    facts = project(history.envelopes)
    rows = compute_kpis(facts, dimension=Dimension(dimension), as_of=AS_OF, areas=grid_areas(history.reference))
    assert_same_figures([row_as_dict(r) for r in rows], expected_rows(history, dimension))


def test_facts_arriving_in_any_order_and_twice_give_the_same_figures(history):
    shuffled = list(history.envelopes) * 2
    random.Random(5).shuffle(shuffled)
    areas = grid_areas(history.reference)
    for dimension in (Dimension.ALL, Dimension.DEPARTMENT, Dimension.DAY):
        in_order = compute_kpis(project(history.envelopes), dimension=dimension, as_of=AS_OF, areas=areas)
        assert compute_kpis(project(shuffled), dimension=dimension, as_of=AS_OF, areas=areas) == in_order


def dispatched(handoff_id: str = "h1", *, due_in: timedelta = timedelta(minutes=15), role=HandoffRole.LEAD) -> HandoffFact:
    return HandoffFact(
        handoff_id, "i1", unit_id="U-1", department="police", role=role.value, grid_id="G0001",
        dispatched_at=T0, report_due_at=T0 + due_in,
    )


def test_a_report_not_yet_due_is_not_owed_but_one_past_due_is():
    handoff = dispatched()
    assert not report_was_owed(handoff, T0 + timedelta(minutes=10))
    assert report_was_owed(handoff, T0 + timedelta(minutes=15))


def test_a_handoff_withdrawn_before_its_deadline_was_never_owed_but_one_withdrawn_after_was():
    early = HandoffFact(**{**vars(dispatched()), "withdrawn_at": T0 + timedelta(minutes=5)})
    late = HandoffFact(**{**vars(dispatched()), "withdrawn_at": T0 + timedelta(minutes=20)})
    later = T0 + timedelta(hours=1)
    assert not report_was_owed(early, later)
    assert report_was_owed(late, later)


def test_a_decline_is_owed_and_counts_as_neither_responded_nor_on_time():
    declined = HandoffFact(**{**vars(dispatched()), "declined_at": T0 + timedelta(minutes=1)})
    [row] = compute_kpis(KpiFacts(handoffs=[declined]), dimension=Dimension.ALL, as_of=T0 + timedelta(minutes=2), areas={})
    assert (row.handoffs_due, row.response.numerator, row.on_time_report.numerator) == (1, 0, 0)
    assert (row.bounce.numerator, row.bounce.denominator) == (1, 1)


def test_acknowledging_exactly_at_the_deadline_is_on_time_and_a_second_later_is_not():
    at_due = HandoffFact(**{**vars(dispatched("a")), "acknowledged_at": T0 + timedelta(minutes=15)})
    after = HandoffFact(**{**vars(dispatched("b")), "acknowledged_at": T0 + timedelta(minutes=15, seconds=1)})
    [row] = compute_kpis(KpiFacts(handoffs=[at_due, after]), dimension=Dimension.ALL, as_of=T0, areas={})
    assert (row.on_time_report.numerator, row.response.numerator, row.handoffs_due) == (1, 2, 2)


def test_closed_unresolved_and_duplicates_are_closed_but_never_resolved():
    facts = KpiFacts(
        incidents=[
            IncidentFact("a", reported_at=T0, outcome="resolved"),
            IncidentFact("b", reported_at=T0, outcome="closed_unresolved"),
            IncidentFact("c", reported_at=T0, outcome="duplicate"),
            IncidentFact("d", reported_at=T0),
        ]
    )
    [row] = compute_kpis(facts, dimension=Dimension.ALL, as_of=T0, areas={})
    assert (row.resolution.numerator, row.resolution.denominator) == (1, 3)
    assert row.incidents == 4


def test_a_rate_with_nothing_counted_is_none_not_zero():
    [row] = compute_kpis(KpiFacts(incidents=[IncidentFact("a", reported_at=T0)]), dimension=Dimension.ALL, as_of=T0, areas={})
    assert row.satisfaction.rate is None and row.on_time_report.rate is None
    assert row.time_to_report.mean_seconds is None


def test_p90_is_the_nearest_rank():
    assert durations(range(1, 11)).p90_seconds == 9
    assert durations(range(1, 12)).p90_seconds == 10
    assert durations([5.0]).p90_seconds == 5.0
    assert durations([1, 2, 3, 4]).mean_seconds == 2.5


def test_the_latest_resolution_and_the_highest_reopen_count_win_whatever_the_order():
    first = IncidentResolved(incident_id="i1", disposition=Disposition.RESOLVED, resolved_at=T0 + timedelta(hours=1))
    second = IncidentResolved(incident_id="i1", disposition=Disposition.RESOLVED, resolved_at=T0 + timedelta(hours=5))
    reopened = IncidentReopened(incident_id="i1", reason="x", reopen_count=2, reopened_at=T0)
    earlier_reopen = IncidentReopened(incident_id="i1", reason="x", reopen_count=1, reopened_at=T0)
    for order in ([first, second, reopened, earlier_reopen], [reopened, second, earlier_reopen, first]):
        fact = IncidentFact("i1")
        for event in order:
            fact = merge_into_incident(fact, event)
        assert (fact.resolved_at, fact.reopen_count) == (second.resolved_at, 2)


def test_the_first_acknowledgement_counts_and_a_later_resolution_replaces_an_earlier_one():
    handoff = HandoffFact("h1", "i1")
    dispatch = HandoffDispatched(
        incident_id="i1", handoff_id="h1", unit_id="U-1", department="police", role=HandoffRole.LEAD,
        category=Category.THEFT, urgency=Urgency.GENERAL, grid_id="G0001", dispatched_at=T0,
        report_due_at=T0 + timedelta(hours=2),
    )
    acks = [
        HandoffAcknowledged(incident_id="i1", handoff_id="h1", unit_id="U-1", actor_id="p", acknowledged_at=T0 + timedelta(minutes=m))
        for m in (30, 10)
    ]
    resolutions = [
        HandoffResolved(
            incident_id="i1", handoff_id="h1", unit_id="U-1", role=HandoffRole.LEAD, actor_id="p",
            disposition=d, resolved_at=T0 + timedelta(hours=h),
        )
        for d, h in ((Disposition.RESOLVED, 5), (Disposition.UNFOUNDED, 3))
    ]
    for event in [*acks, dispatch, *resolutions]:
        handoff = merge_into_handoff(handoff, event, T0)
    assert handoff.acknowledged_at == T0 + timedelta(minutes=10)
    assert (handoff.disposition, handoff.dispatched_at) == ("resolved", T0)


def test_department_figures_of_an_incident_belong_to_its_first_lead():
    lead = dispatched("lead")
    replacement = HandoffFact(**{**vars(dispatched("lead-2")), "department": "command", "dispatched_at": T0 + timedelta(minutes=3)})
    co = HandoffFact(**{**vars(dispatched("co", role=HandoffRole.CO_OPERATING)), "department": "health", "unit_id": "U-2"})
    facts = KpiFacts(incidents=[IncidentFact("i1", reported_at=T0, outcome="resolved")], handoffs=[replacement, co, lead])
    rows = {r.group: r for r in compute_kpis(facts, dimension=Dimension.DEPARTMENT, as_of=T0, areas={})}
    assert (rows["police"].incidents, rows["police"].resolution.numerator) == (1, 1)
    assert (rows["health"].incidents, rows["health"].handoffs_dispatched) == (0, 1)
    assert rows["command"].handoffs_dispatched == 1
    assert rows["police"].whistle.numerator == 1  # lead and co-operating units: a joint whistle


def test_a_breach_whose_dispatch_has_not_arrived_still_counts():
    facts = KpiFacts(breaches=[BreachFact("d1", "i1", "h-unknown", "U-9", T0)])
    [row] = compute_kpis(facts, dimension=Dimension.ALL, as_of=T0, areas={})
    assert row.report_breaches == 1


def test_days_are_local_china_days():
    late_evening_utc = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)  # 01:00 on 3 March in China
    facts = KpiFacts(incidents=[IncidentFact("i1", reported_at=late_evening_utc)])
    [row] = compute_kpis(facts, dimension=Dimension.DAY, as_of=T0, areas={})
    assert row.group == "2026-03-03"


def test_a_range_is_half_open():
    facts = KpiFacts(incidents=[IncidentFact("a", reported_at=T0), IncidentFact("b", reported_at=T0 + timedelta(days=1))])
    [row] = compute_kpis(facts, dimension=Dimension.ALL, as_of=T0, areas={}, start=T0, end=T0 + timedelta(days=1))
    assert row.incidents == 1


def test_a_repeated_feedback_event_adds_the_same_keyed_fact():
    envelope = envelope_for(
        FeedbackGiven(incident_id="i1", actor_id="r", satisfaction=Satisfaction.SATISFIED, given_at=T0), "i1", at=T0
    )
    assert standalone_fact(envelope) == standalone_fact(envelope)
    assert standalone_fact(envelope).event_id == str(envelope.id)


def test_weeks_and_months_are_local_iso_weeks_and_calendar_months():
    # 2026-12-31 23:30 UTC is 1 January 2027 in China: ISO week 53 of 2026 in China, not week 53 in UTC.
    new_year_in_china = datetime(2026, 12, 31, 17, 30, tzinfo=UTC)
    facts = KpiFacts(incidents=[IncidentFact("i1", reported_at=new_year_in_china)])
    assert [r.group for r in compute_kpis(facts, dimension=Dimension.MONTH, as_of=T0, areas={})] == ["2027-01"]
    assert [r.group for r in compute_kpis(facts, dimension=Dimension.WEEK, as_of=T0, areas={})] == ["2026-W53"]
    monday = datetime(2027, 1, 3, 16, 0, tzinfo=UTC)  # Monday 4 January 2027, 00:00 in China
    facts = KpiFacts(incidents=[IncidentFact("i2", reported_at=monday)])
    assert [r.group for r in compute_kpis(facts, dimension=Dimension.WEEK, as_of=T0, areas={})] == ["2027-W01"]


def test_breaches_of_every_clock_kind_are_counted_per_kind_and_the_kind_dimension_counts_only_them():
    handoff = HandoffFact(**{**vars(dispatched("h1")), "acknowledged_at": T0 + timedelta(minutes=5)})
    facts = KpiFacts(
        incidents=[IncidentFact("i1", reported_at=T0)],
        handoffs=[handoff],
        breaches=[
            BreachFact("d-report", "i1", "h1", "U-1", T0 + timedelta(minutes=15), "report"),
            BreachFact("d-scene", "i1", "h1", "U-1", T0 + timedelta(minutes=45), "on_scene"),
            BreachFact("d-resolve", "i1", "h1", "U-1", T0 + timedelta(hours=5), "resolution"),
            BreachFact("d-verify", "i1", None, None, T0 + timedelta(hours=9), "verification"),
        ],
    )
    [row] = compute_kpis(facts, dimension=Dimension.ALL, as_of=T0, areas={})
    assert row.breaches == {"report": 1, "on_scene": 1, "resolution": 1, "verification": 1, "total": 4}
    assert row.report_breaches == 1
    # The incident's own clock follows its first lead, like its other figures.
    [unit_row] = compute_kpis(facts, dimension=Dimension.UNIT, as_of=T0, areas={})
    assert (unit_row.group, unit_row.breaches["total"]) == ("U-1", 4)
    kinds = {r.group: r for r in compute_kpis(facts, dimension=Dimension.KIND, as_of=T0, areas={})}
    assert sorted(kinds) == ["on_scene", "report", "resolution", "verification"]
    assert all(r.breaches["total"] == 1 and r.incidents == 0 and r.handoffs_dispatched == 0 for r in kinds.values())
    assert kinds["report"].report_breaches == 1 and kinds["verification"].report_breaches == 0


def test_a_breach_event_of_any_kind_becomes_a_keyed_fact():
    breached = DeadlineBreached(
        incident_id="i1", deadline_id="d1", handoff_id=None, kind=DeadlineKind.VERIFICATION, due_at=T0,
        urgency=Urgency.GENERAL, fired_at=T0,
    )
    fact = standalone_fact(envelope_for(breached, "i1", at=T0))
    assert fact == BreachFact("d1", "i1", None, None, T0, "verification")


def test_the_time_to_report_histogram_counts_the_same_durations_as_the_figures(history):
    facts = project(history.envelopes)
    buckets = time_to_report_histogram(facts)
    [row] = compute_kpis(facts, dimension=Dimension.ALL, as_of=AS_OF, areas={})
    assert sum(b["count"] for b in buckets) == row.time_to_report.count
    assert [b["to_seconds"] for b in buckets] == [*TIME_TO_REPORT_BUCKETS, None]
    seconds = sorted(
        (h.acked_at - h.dispatched_at).total_seconds() for i in history.incidents for h in i.handoffs if h.acked_at
    )
    assert buckets[0]["count"] == sum(1 for s in seconds if s <= 60)
    assert buckets[-1]["count"] == sum(1 for s in seconds if s > TIME_TO_REPORT_BUCKETS[-1])
    edge = HandoffFact(**{**vars(dispatched("edge")), "acknowledged_at": T0 + timedelta(seconds=300)})
    assert [b["count"] for b in time_to_report_histogram(KpiFacts(handoffs=[edge]))][:3] == [0, 1, 0]
