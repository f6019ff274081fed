"""Pure intake rules: duplicate detection, geography, idempotency hashing, the progress projection.

No I/O and no framework: handlers load rows, call these functions, and store what they return.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from contracts.envelope import Event
from contracts.events import (
    DeadlineArmed,
    DeadlineBreached,
    DeadlineBreachWithdrawn,
    FeedbackGiven,
    HandoffAcknowledged,
    HandoffDeclined,
    HandoffDispatched,
    HandoffReassigned,
    HandoffReleased,
    HandoffResolved,
    IncidentClassified,
    IncidentClosed,
    IncidentEscalated,
    IncidentReclassified,
    IncidentEscalatedToCommandCentre,
    IncidentReopened,
    IncidentResolved,
    IncidentVerified,
    ResponderOnScene,
    VerificationRejected,
)
from contracts.vocabulary import Category, HandoffRole, HandoffState

EARTH_RADIUS_M = 6_371_008.8

# --- idempotency ----------------------------------------------------------------------------


def canonical_body_hash(body: Any) -> str:
    """SHA-256 of the JSON body with sorted keys and no whitespace, so formatting never matters."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- geography ------------------------------------------------------------------------------


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two WGS-84 points."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    d_phi = phi2 - phi1
    d_lambda = math.radians(lon2 - lon1)
    a = math.sin(d_phi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(d_lambda / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True)
class BoundingBox:
    """A latitude/longitude rectangle that contains every point within a radius of a centre."""

    min_latitude: float
    max_latitude: float
    min_longitude: float
    max_longitude: float


def bounding_box(latitude: float, longitude: float, radius_m: float) -> BoundingBox:
    """A box around a point that is at least `radius_m` wide on every side (a cheap SQL prefilter)."""
    d_lat = math.degrees(radius_m / EARTH_RADIUS_M)
    # Near the poles a degree of longitude shrinks to nothing; widen to the whole circle there.
    cos_lat = math.cos(math.radians(latitude))
    d_lon = 180.0 if cos_lat < 1e-6 else min(180.0, math.degrees(radius_m / (EARTH_RADIUS_M * cos_lat)))
    return BoundingBox(latitude - d_lat, latitude + d_lat, longitude - d_lon, longitude + d_lon)


@dataclass(frozen=True)
class GridCentre:
    """A grid's id and the coordinates of its centre."""

    grid_id: str
    latitude: float
    longitude: float


def nearest_grid(latitude: float, longitude: float, centres: Iterable[GridCentre]) -> GridCentre | None:
    """The grid whose centre is closest to a point, or None when there are no grids."""
    best: GridCentre | None = None
    best_distance = math.inf
    for centre in centres:
        distance = haversine_m(latitude, longitude, centre.latitude, centre.longitude)
        if distance < best_distance:
            best, best_distance = centre, distance
    return best


# --- duplicate detection --------------------------------------------------------------------


@dataclass(frozen=True)
class DuplicatePolicy:
    """When two reports count as the same matter."""

    radius_m: float = 200.0
    window: timedelta = timedelta(minutes=30)
    text_similarity: float = 0.6
    ngram: int = 2


@dataclass(frozen=True)
class ReportSketch:
    """The parts of a report that duplicate detection compares."""

    incident_id: str
    grid_id: str
    description: str
    category_hint: Category | None
    latitude: float | None
    longitude: float | None
    reported_at: datetime
    is_open: bool = True
    # The category classification decided (None until it has); it outranks the reporter's hint.
    category: Category | None = None
    # The incident this one is already linked to as a probable duplicate.
    duplicate_of: str | None = None

    @property
    def known_category(self) -> Category | None:
        """The classified category once there is one, the reporter's hint before."""
        return self.category or self.category_hint


@dataclass(frozen=True)
class DuplicateMatch:
    """A new report's probable original, and why."""

    original_incident_id: str
    reason: str


@dataclass(frozen=True)
class DuplicateLink:
    """An incident found to repeat an earlier one once a category became known."""

    incident_id: str
    original_incident_id: str
    reason: str


def _normalise_text(text: str) -> str:
    return re.sub(r"[\s\W_]+", "", text.lower())


def character_ngrams(text: str, n: int = 2) -> frozenset[str]:
    """Character n-grams of the normalised text (Chinese has no word spaces, so no word tokens)."""
    normalised = _normalise_text(text)
    if len(normalised) < n:
        return frozenset({normalised}) if normalised else frozenset()
    return frozenset(normalised[i : i + n] for i in range(len(normalised) - n + 1))


def text_similarity(a: str, b: str, n: int = 2) -> float:
    """Jaccard similarity of the character n-gram sets of two texts (0 when either is empty)."""
    grams_a, grams_b = character_ngrams(a, n), character_ngrams(b, n)
    if not grams_a or not grams_b:
        return 0.0
    return len(grams_a & grams_b) / len(grams_a | grams_b)


def _place_reason(new: ReportSketch, earlier: ReportSketch, policy: DuplicatePolicy) -> str | None:
    if new.grid_id == earlier.grid_id:
        return f"same grid {new.grid_id}"
    if None not in (new.latitude, new.longitude, earlier.latitude, earlier.longitude):
        distance = haversine_m(new.latitude, new.longitude, earlier.latitude, earlier.longitude)  # type: ignore[arg-type]
        if distance <= policy.radius_m:
            return f"{distance:.0f} m apart"
    return None


def _matter_reason(new: ReportSketch, earlier: ReportSketch, policy: DuplicatePolicy) -> str | None:
    new_category, earlier_category = new.known_category, earlier.known_category
    if new_category is not None and earlier_category is not None:
        if new_category is earlier_category:
            return f"same category {new_category.value}"
        return None
    similarity = text_similarity(new.description, earlier.description, policy.ngram)
    if similarity >= policy.text_similarity:
        return f"description similarity {similarity:.2f}"
    return None


def _linked_either_way(a: ReportSketch, b: ReportSketch) -> bool:
    return a.duplicate_of == b.incident_id or b.duplicate_of == a.incident_id


def _apart(a: ReportSketch, b: ReportSketch) -> str:
    return f"{abs((a.reported_at - b.reported_at).total_seconds()) / 60:.0f} min"


def find_duplicate(new: ReportSketch, earlier: Sequence[ReportSketch], policy: DuplicatePolicy) -> DuplicateMatch | None:
    """The earliest still-open report within the window that is at the same place about the same matter.

    At report time the new report's category is its hint; an earlier one's is its classification
    when known, else its hint. Without a category on either side, near-identical text decides.
    """
    for candidate in sorted(earlier, key=lambda r: r.reported_at):
        if candidate.incident_id == new.incident_id or not candidate.is_open or _linked_either_way(new, candidate):
            continue
        if not (timedelta(0) <= new.reported_at - candidate.reported_at <= policy.window):
            continue
        place = _place_reason(new, candidate, policy)
        if place is None:
            continue
        matter = _matter_reason(new, candidate, policy)
        if matter is None:
            continue
        return DuplicateMatch(candidate.incident_id, f"{place}, {matter}, {_apart(new, candidate)} earlier")
    return None


def _order(report: ReportSketch) -> tuple[datetime, str]:
    # A strict order, so a pair is only ever linked one way (later -> earlier) whoever is classified first.
    return report.reported_at, report.incident_id


def _same_category_pair(later: ReportSketch, earlier: ReportSketch, policy: DuplicatePolicy) -> DuplicateLink | None:
    """`later` -> `earlier` when both are open, at the same place, within the window, of one known category."""
    if later.incident_id == earlier.incident_id or not (later.is_open and earlier.is_open):
        return None
    if later.duplicate_of is not None or _linked_either_way(later, earlier):
        return None
    if later.reported_at - earlier.reported_at > policy.window:
        return None
    category = later.known_category
    if category is None or category is not earlier.known_category:
        return None
    place = _place_reason(later, earlier, policy)
    if place is None:
        return None
    reason = f"{place}, same category {category.value} (classified), {_apart(later, earlier)} earlier"
    return DuplicateLink(later.incident_id, earlier.incident_id, reason)


def links_on_classification(
    subject: ReportSketch, neighbours: Sequence[ReportSketch], policy: DuplicatePolicy
) -> list[DuplicateLink]:
    """The duplicate links an incident's (re)classification makes known, later report -> earlier one.

    The subject is linked to the earliest open earlier report of the same category nearby, unless
    it is linked already; and, as classifications of different incidents arrive in any order, each
    later open report nearby of the same category that is not linked yet is linked to the subject.
    Every incident is linked at most once, never to itself, never to a closed incident.
    """
    if subject.category is None:
        return []
    links: list[DuplicateLink] = []
    earlier = sorted((n for n in neighbours if _order(n) < _order(subject)), key=_order)
    later = sorted((n for n in neighbours if _order(n) > _order(subject)), key=_order)
    for candidate in earlier:
        link = _same_category_pair(subject, candidate, policy)
        if link is not None:
            links.append(link)
            break
    for candidate in later:
        link = _same_category_pair(candidate, subject, policy)
        if link is not None:
            links.append(link)
    return links


# --- progress projection --------------------------------------------------------------------

# A handoff only moves forward: a late or redelivered fact never undoes a later one.
HANDOFF_STATE_RANK: dict[HandoffState, int] = {
    HandoffState.DISPATCHED: 0,
    HandoffState.ACKNOWLEDGED: 1,
    HandoffState.ON_SCENE: 2,
    HandoffState.RESOLVED: 3,
    HandoffState.DECLINED: 3,
    HandoffState.REASSIGNED: 3,
    HandoffState.RELEASED: 3,
}
REPORTED_STATES = frozenset({HandoffState.ACKNOWLEDGED, HandoffState.ON_SCENE, HandoffState.RESOLVED})
# Handoffs that ended without the unit being needed any more; another handoff replaces them.
WITHDRAWN_STATES = frozenset({HandoffState.DECLINED, HandoffState.REASSIGNED, HandoffState.RELEASED})


def advance_handoff_state(current: HandoffState | None, observed: HandoffState) -> HandoffState:
    """The state after observing a fact: the further of the two along the handoff's life."""
    if current is None:
        return observed
    return observed if HANDOFF_STATE_RANK[observed] > HANDOFF_STATE_RANK[current] else current


@dataclass(frozen=True)
class HandoffView:
    """What the projection knows about one handoff, for the all-reported rule."""

    role: HandoffRole | None
    state: HandoffState


def all_units_reported(handoffs: Iterable[HandoffView]) -> bool:
    """True when every summoned non-escalation unit still on the incident has reported (报到)."""
    counted = [h for h in handoffs if h.role is not HandoffRole.ESCALATION and h.state not in WITHDRAWN_STATES]
    return bool(counted) and all(h.state in REPORTED_STATES for h in counted)


class IncidentStatus:
    """The status names shown to the grid worker."""

    REPORTED = "reported"
    CLASSIFIED = "classified"
    DISPATCHED = "dispatched"
    RESOLVED = "resolved"
    VERIFIED = "verified"
    REOPENED = "reopened"
    # The reopen cap was spent: the district command centre has taken the incident over.
    ESCALATED = "escalated"
    CLOSED = "closed"


# Closure facts that set the status, by event type.
CLOSURE_STATUS_BY_EVENT: dict[str, str] = {
    "IncidentResolved": IncidentStatus.RESOLVED,
    "IncidentVerified": IncidentStatus.VERIFIED,
    "VerificationRejected": IncidentStatus.REOPENED,
    "IncidentReopened": IncidentStatus.REOPENED,
    "IncidentEscalatedToCommandCentre": IncidentStatus.ESCALATED,
}


def should_replace(stored_at: datetime | None, observed_at: datetime) -> bool:
    """Last-writer-wins by event time: a fact older than the stored one does not overwrite it."""
    return stored_at is None or observed_at >= stored_at


def incident_status(*, closed: bool, closure_status: str | None, has_handoffs: bool, classified: bool) -> str:
    """The status computed from the facts known so far, whatever order they arrived in."""
    if closed:
        return IncidentStatus.CLOSED
    if closure_status:
        return closure_status
    if has_handoffs:
        return IncidentStatus.DISPATCHED
    if classified:
        return IncidentStatus.CLASSIFIED
    return IncidentStatus.REPORTED


def open311_status(status: str) -> str:
    """GeoReport v2 knows only open and closed."""
    return "closed" if status == IncidentStatus.CLOSED else "open"


# --- service catalogue (Open311) ------------------------------------------------------------


@dataclass(frozen=True)
class ServiceDescription:
    """How a category is presented as an Open311 service."""

    name_zh: str
    name_en: str
    group: str


SERVICE_DESCRIPTIONS: dict[Category, ServiceDescription] = {
    Category.NEIGHBOUR_DISPUTE: ServiceDescription("邻里纠纷", "Neighbour dispute", "disputes"),
    Category.THEFT: ServiceDescription("盗窃", "Theft", "public security"),
    Category.TELECOM_FRAUD: ServiceDescription("电信诈骗", "Telecom fraud", "public security"),
    Category.VIOLENCE: ServiceDescription("暴力事件", "Violence", "public security"),
    Category.FIRE: ServiceDescription("火灾", "Fire", "emergencies"),
    Category.MEDICAL_EMERGENCY: ServiceDescription("医疗急救", "Medical emergency", "emergencies"),
    Category.TRAFFIC_ACCIDENT: ServiceDescription("交通事故", "Traffic accident", "emergencies"),
    Category.MISSING_PERSON: ServiceDescription("人员走失", "Missing person", "emergencies"),
    Category.SAFETY_HAZARD: ServiceDescription("安全隐患", "Safety hazard", "safety"),
    Category.CONSULTATION: ServiceDescription("咨询求助", "Consultation", "services"),
    Category.MEDIATION_REQUEST: ServiceDescription("矛盾调解", "Mediation request", "disputes"),
    Category.ENVIRONMENT: ServiceDescription("环境卫生", "Environment and sanitation", "environment"),
    Category.CIVIL_AFFAIRS: ServiceDescription("民政救助", "Civil affairs", "services"),
    Category.MARKET_SAFETY: ServiceDescription("市场安全", "Market and food safety", "safety"),
    Category.NOISE: ServiceDescription("噪音扰民", "Noise", "environment"),
    Category.OTHER: ServiceDescription("其他", "Other", "other"),
}


def describe_service(category: Category) -> ServiceDescription:
    """The Open311 presentation of a category (every category has one)."""
    return SERVICE_DESCRIPTIONS[category]


# --- timeline -------------------------------------------------------------------------------


def _fmt(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def timeline_summary(event: Event) -> str:
    """One human line about a consumed event, for the grid worker's timeline."""
    match event:
        case IncidentClassified():
            review = ", needs review" if event.needs_review else ""
            return f"classified as {event.category.value}, {event.urgency.value}, priority {event.priority}{review}"
        case IncidentReclassified():
            return (
                f"reclassified from {event.previous_category.value}/{event.previous_urgency.value} "
                f"to {event.category.value}/{event.urgency.value}: {event.reason}"
            )
        case HandoffDispatched():
            return (
                f"{event.unit_id} ({event.department}, {event.role.value}) summoned; "
                f"must report by {_fmt(event.report_due_at)}"
            )
        case HandoffAcknowledged():
            return f"{event.unit_id} reported for duty (报到){' late' if event.late else ''}"
        case HandoffDeclined():
            return f"{event.unit_id} declined: {event.reason_code.value}"
        case HandoffReassigned():
            return f"handoff moved from {event.from_unit_id} to {event.to_unit_id}"
        case ResponderOnScene():
            return f"{event.unit_id} on scene"
        case HandoffResolved():
            return f"{event.unit_id} finished: {event.disposition.value}"
        case HandoffReleased():
            return f"{event.unit_id} released"
        case IncidentEscalated():
            return f"escalated to level {event.level} ({event.unit_id}): {event.reason}"
        case DeadlineArmed():
            return f"{event.kind.value} deadline set for {_fmt(event.due_at)}"
        case DeadlineBreached():
            who = f" by {event.unit_id}" if event.unit_id else ""
            return f"{event.kind.value} deadline missed{who} (due {_fmt(event.due_at)})"
        case DeadlineBreachWithdrawn():
            return f"{event.kind.value} deadline breach withdrawn: done in time ({_fmt(event.fact_at)})"
        case IncidentResolved():
            return f"resolved: {event.disposition.value}"
        case IncidentVerified():
            return f"outcome verified by {event.actor_id}"
        case VerificationRejected():
            return f"verification rejected by {event.actor_id}: {event.reason}"
        case FeedbackGiven():
            return f"reporter feedback: {event.satisfaction.value}"
        case IncidentEscalatedToCommandCentre():
            return f"taken over by the district command centre after {event.reopen_count} reopens: {event.reason}"
        case IncidentReopened():
            return f"reopened ({event.reopen_count}): {event.reason}"
        case IncidentClosed():
            return f"closed: {event.outcome.value}"
    return event.event_type
