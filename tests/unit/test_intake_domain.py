"""Intake's pure rules: geography, duplicate detection, idempotency hashing, the progress projection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from contracts.events import DeadlineBreached, HandoffAcknowledged, IncidentClosed
from contracts.vocabulary import Category, ClosureOutcome, DeadlineKind, HandoffRole, HandoffState, Urgency
from services.intake.domain import (
    DuplicatePolicy,
    GridCentre,
    HandoffView,
    IncidentStatus,
    ReportSketch,
    advance_handoff_state,
    all_units_reported,
    bounding_box,
    canonical_body_hash,
    find_duplicate,
    haversine_m,
    links_on_classification,
    incident_status,
    nearest_grid,
    open311_status,
    should_replace,
    text_similarity,
    timeline_summary,
)
from services.intake.reporting import ReportIncident
from services.runtime.clock import FakeClock

CLOCK = FakeClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
T0 = CLOCK.now()
POLICY = DuplicatePolicy()


def sketch(
    incident_id: str,
    *,
    grid_id: str = "G0001",
    description: str = "楼下有人打架",
    hint: Category | None = Category.VIOLENCE,
    at: datetime = T0,
    latitude: float | None = None,
    longitude: float | None = None,
    is_open: bool = True,
    category: Category | None = None,
    duplicate_of: str | None = None,
) -> ReportSketch:
    return ReportSketch(incident_id, grid_id, description, hint, latitude, longitude, at, is_open, category, duplicate_of)


# --- geography ------------------------------------------------------------------------------


def test_haversine_one_degree_of_latitude_is_about_111_km():
    assert haversine_m(28.0, 112.9, 29.0, 112.9) == pytest.approx(111_195, rel=1e-3)
    assert haversine_m(28.1, 112.9, 28.1, 112.9) == 0


def test_bounding_box_contains_every_point_on_the_radius():
    box = bounding_box(28.1, 112.9, 200)
    for d_lat, d_lon in ((0.0018, 0), (-0.0018, 0), (0, 0.00204), (0, -0.00204)):
        point = (28.1 + d_lat, 112.9 + d_lon)
        if haversine_m(28.1, 112.9, *point) <= 200:
            assert box.min_latitude <= point[0] <= box.max_latitude
            assert box.min_longitude <= point[1] <= box.max_longitude


def test_nearest_grid_picks_the_closest_centre_and_none_without_grids():
    centres = [GridCentre("G1", 28.10, 112.90), GridCentre("G2", 28.20, 112.90)]
    assert nearest_grid(28.18, 112.90, centres).grid_id == "G2"
    assert nearest_grid(28.18, 112.90, []) is None


# --- duplicate detection --------------------------------------------------------------------


def test_same_grid_same_hint_within_window_links_to_the_earlier_report():
    earlier = sketch("a", at=T0)
    new = sketch("b", at=T0 + timedelta(minutes=10))
    match = find_duplicate(new, [earlier], POLICY)
    assert match is not None and match.original_incident_id == "a"
    assert "same grid" in match.reason and "violence" in match.reason


def test_different_category_hints_are_never_linked_even_with_the_same_words():
    earlier = sketch("a", hint=Category.VIOLENCE)
    new = sketch("b", hint=Category.NOISE, at=T0 + timedelta(minutes=1))
    assert find_duplicate(new, [earlier], POLICY) is None


def test_report_outside_the_window_is_not_linked():
    earlier = sketch("a", at=T0)
    assert find_duplicate(sketch("b", at=T0 + timedelta(minutes=31)), [earlier], POLICY) is None
    assert find_duplicate(sketch("b", at=T0 + timedelta(minutes=30)), [earlier], POLICY) is not None


def test_closed_incident_is_not_an_original():
    earlier = sketch("a", is_open=False)
    assert find_duplicate(sketch("b", at=T0 + timedelta(minutes=1)), [earlier], POLICY) is None


def test_neighbouring_grid_within_radius_links_but_farther_does_not():
    earlier = sketch("a", grid_id="G0001", latitude=28.1000, longitude=112.9000)
    near = sketch("b", grid_id="G0002", latitude=28.1010, longitude=112.9000, at=T0 + timedelta(minutes=2))
    far = sketch("c", grid_id="G0002", latitude=28.1050, longitude=112.9000, at=T0 + timedelta(minutes=2))
    match = find_duplicate(near, [earlier], POLICY)
    assert match is not None and "m apart" in match.reason
    assert find_duplicate(far, [earlier], POLICY) is None


def test_without_hints_near_identical_descriptions_link_and_different_ones_do_not():
    earlier = sketch("a", hint=None, description="3号楼楼下有人打架，有人流血")
    same = sketch("b", hint=None, description="3号楼楼下有人打架,有人流血!", at=T0 + timedelta(minutes=5))
    other = sketch("c", hint=None, description="小区垃圾堆放很臭", at=T0 + timedelta(minutes=5))
    assert find_duplicate(same, [earlier], POLICY) is not None
    assert find_duplicate(other, [earlier], POLICY) is None


def test_the_earliest_matching_open_report_is_the_original():
    first, second = sketch("a", at=T0), sketch("b", at=T0 + timedelta(minutes=5))
    match = find_duplicate(sketch("c", at=T0 + timedelta(minutes=8)), [second, first], POLICY)
    assert match.original_incident_id == "a"


def test_at_report_an_earlier_incidents_classified_category_outranks_its_hint():
    earlier = sketch("a", hint=None, description="有人在楼道里大声吵闹", category=Category.NOISE)
    new = sketch("b", hint=Category.NOISE, description="半夜装修电钻声", at=T0 + timedelta(minutes=3))
    match = find_duplicate(new, [earlier], POLICY)
    assert match is not None and "same category noise" in match.reason
    reclassified = sketch("a", hint=Category.NOISE, category=Category.NEIGHBOUR_DISPUTE)
    assert find_duplicate(new, [reclassified], POLICY) is None


# --- duplicate linking once the category is known -------------------------------------------------


def classified(incident_id: str, minutes: float = 0, category: Category | None = Category.VIOLENCE, **kw) -> ReportSketch:
    return sketch(incident_id, hint=None, description=f"描述 {incident_id}", at=T0 + timedelta(minutes=minutes), category=category, **kw)


def pairs(links) -> list[tuple[str, str]]:
    return [(link.incident_id, link.original_incident_id) for link in links]


def test_a_classified_incident_is_linked_to_the_earliest_open_earlier_one_of_its_category():
    subject = classified("c", 20)
    neighbours = [classified("b", 10), classified("a", 5), classified("x", 1, Category.NOISE)]
    (link,) = links_on_classification(subject, neighbours, POLICY)
    assert (link.incident_id, link.original_incident_id) == ("c", "a")
    assert link.reason == "same grid G0001, same category violence (classified), 15 min earlier"


def test_classified_first_the_earlier_incident_picks_up_later_unlinked_ones():
    earlier = classified("a", 0)
    later = [classified("b", 5), classified("c", 8), classified("d", 9, duplicate_of="z"), classified("e", 9, Category.FIRE)]
    assert pairs(links_on_classification(earlier, later, POLICY)) == [("b", "a"), ("c", "a")]


def test_a_pair_is_linked_one_way_whichever_is_classified_first():
    a, b = classified("a", 0), classified("b", 4)
    assert pairs(links_on_classification(a, [b], POLICY)) == [("b", "a")]
    assert pairs(links_on_classification(b, [a], POLICY)) == [("b", "a")]
    # Reported at the same instant: the incident id breaks the tie, the same way from both sides.
    twin_a, twin_b = classified("a", 0), classified("b", 0)
    assert pairs(links_on_classification(twin_a, [twin_b], POLICY)) == pairs(links_on_classification(twin_b, [twin_a], POLICY)) == [("b", "a")]


def test_no_link_to_itself_twice_backwards_or_with_a_closed_incident():
    subject = classified("b", 5)
    assert links_on_classification(subject, [classified("b", 5)], POLICY) == []
    assert links_on_classification(classified("b", 5, duplicate_of="q"), [classified("a", 0)], POLICY) == []
    assert links_on_classification(subject, [classified("a", 0, is_open=False)], POLICY) == []
    assert links_on_classification(classified("b", 5, is_open=False), [classified("a", 0)], POLICY) == []
    # Linked the other way round already (at report time, same instant): not linked back.
    assert links_on_classification(classified("a", 0, duplicate_of="b"), [classified("b", 0)], POLICY) == []
    assert links_on_classification(classified("b", 0), [classified("a", 0, duplicate_of="b")], POLICY) == []


def test_an_unclassified_subject_links_nothing_and_an_unclassified_neighbour_counts_by_its_hint():
    assert links_on_classification(classified("b", 5, category=None), [classified("a", 0)], POLICY) == []
    hinted = sketch("a", hint=Category.VIOLENCE, at=T0)
    assert pairs(links_on_classification(classified("b", 5), [hinted], POLICY)) == [("b", "a")]
    assert links_on_classification(classified("b", 5), [sketch("a", hint=None, at=T0)], POLICY) == []


def test_classification_links_honour_the_configured_window_and_radius():
    policy = DuplicatePolicy(radius_m=500, window=timedelta(minutes=10))
    # 0.0044° of latitude is about 489 m, 0.0046° about 511 m.
    assert haversine_m(28.1, 112.9, 28.1044, 112.9) < 500 < haversine_m(28.1, 112.9, 28.1046, 112.9)
    origin = classified("a", 0, grid_id="G0001", latitude=28.1, longitude=112.9)

    def later(minutes: float, latitude: float) -> ReportSketch:
        return classified("b", minutes, grid_id="G0002", latitude=latitude, longitude=112.9)

    assert pairs(links_on_classification(later(10, 28.1044), [origin], policy)) == [("b", "a")]
    assert links_on_classification(later(10, 28.1046), [origin], policy) == []
    assert links_on_classification(later(10 + 1 / 60, 28.1044), [origin], policy) == []
    assert links_on_classification(later(9, 28.1044), [origin], DuplicatePolicy(radius_m=400, window=timedelta(minutes=10))) == []
    # Without coordinates on one side only the same grid counts.
    assert links_on_classification(classified("b", 1, grid_id="G0002"), [origin], policy) == []


def test_text_similarity_is_jaccard_of_character_bigrams():
    assert text_similarity("abcd", "abcd") == 1.0
    assert text_similarity("abcd", "abce") == pytest.approx(2 / 4)
    assert text_similarity("", "abcd") == 0.0
    assert text_similarity("Fire at Block 3", "fire at block 3!") == 1.0


# --- idempotency ----------------------------------------------------------------------------


def test_canonical_body_hash_ignores_key_order_but_not_values():
    a = {"grid_id": "G0001", "location": {"latitude": 1.0, "longitude": 2.0}}
    b = {"location": {"longitude": 2.0, "latitude": 1.0}, "grid_id": "G0001"}
    assert canonical_body_hash(a) == canonical_body_hash(b)
    assert canonical_body_hash(a) != canonical_body_hash({**a, "grid_id": "G0002"})


# --- projection -----------------------------------------------------------------------------


def test_handoff_state_never_moves_backwards():
    assert advance_handoff_state(None, HandoffState.ACKNOWLEDGED) is HandoffState.ACKNOWLEDGED
    assert advance_handoff_state(HandoffState.ACKNOWLEDGED, HandoffState.DISPATCHED) is HandoffState.ACKNOWLEDGED
    assert advance_handoff_state(HandoffState.RESOLVED, HandoffState.ON_SCENE) is HandoffState.RESOLVED
    assert advance_handoff_state(HandoffState.DISPATCHED, HandoffState.DECLINED) is HandoffState.DECLINED


def test_all_reported_ignores_escalations_and_withdrawn_handoffs_and_needs_at_least_one():
    assert all_units_reported([]) is False
    lead = HandoffView(HandoffRole.LEAD, HandoffState.ACKNOWLEDGED)
    escalation = HandoffView(HandoffRole.ESCALATION, HandoffState.DISPATCHED)
    declined = HandoffView(HandoffRole.CO_OPERATING, HandoffState.DECLINED)
    waiting = HandoffView(HandoffRole.CO_OPERATING, HandoffState.DISPATCHED)
    assert all_units_reported([lead, escalation, declined]) is True
    assert all_units_reported([lead, waiting]) is False
    assert all_units_reported([escalation]) is False


def test_closed_status_wins_over_every_other_fact():
    assert incident_status(closed=True, closure_status="reopened", has_handoffs=True, classified=True) == "closed"
    assert incident_status(closed=False, closure_status="resolved", has_handoffs=True, classified=True) == "resolved"
    assert incident_status(closed=False, closure_status=None, has_handoffs=True, classified=False) == "dispatched"
    assert incident_status(closed=False, closure_status=None, has_handoffs=False, classified=True) == "classified"
    assert incident_status(closed=False, closure_status=None, has_handoffs=False, classified=False) == "reported"
    assert open311_status(IncidentStatus.CLOSED) == "closed"
    assert open311_status(IncidentStatus.REOPENED) == "open"


def test_older_fact_does_not_replace_a_newer_one():
    assert should_replace(None, T0)
    assert should_replace(T0, T0 + timedelta(seconds=1))
    assert not should_replace(T0, T0 - timedelta(seconds=1))


def test_timeline_summaries_say_what_happened():
    ack = HandoffAcknowledged(
        incident_id="i", handoff_id="h", unit_id="U-POL-P0001", actor_id="P0001", acknowledged_at=T0, late=True
    )
    assert timeline_summary(ack) == "U-POL-P0001 reported for duty (报到) late"
    breach = DeadlineBreached(
        incident_id="i", deadline_id="d", handoff_id="h", kind=DeadlineKind.REPORT, due_at=T0,
        urgency=Urgency.URGENT, unit_id="U-1", fired_at=T0,
    )
    assert "report deadline missed by U-1" in timeline_summary(breach)
    closed = IncidentClosed(incident_id="i", outcome=ClosureOutcome.CLOSED_UNRESOLVED, closed_at=T0)
    assert timeline_summary(closed) == "closed: closed_unresolved"


# --- request model --------------------------------------------------------------------------


def body(**overrides):
    base = {"grid_id": "G0001", "reporter_id": "W0001", "description": "有人打架", "location": {"address": "幸福路8号"}}
    return {**base, **overrides}


def test_location_needs_a_coordinates_pair_or_an_address():
    ReportIncident.model_validate(body(location={"latitude": 28.1, "longitude": 112.9}))
    for location in ({}, {"latitude": 28.1}, {"address": "   "}, {"latitude": 91, "longitude": 0}):
        with pytest.raises(ValidationError):
            ReportIncident.model_validate(body(location=location))


def test_media_is_capped_at_ten_and_description_at_2000_characters():
    ReportIncident.model_validate(body(media=[f"https://m/{i}.jpg" for i in range(10)]))
    with pytest.raises(ValidationError):
        ReportIncident.model_validate(body(media=[f"https://m/{i}.jpg" for i in range(11)]))
    with pytest.raises(ValidationError):
        ReportIncident.model_validate(body(description="火" * 2001))
