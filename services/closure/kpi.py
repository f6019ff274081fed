"""The three rates and their companions, computed from stored facts (never typed in).

Pure: facts in, figures out; no I/O. The HTTP API, the Prometheus gauges and the rebuild check
all call `compute_kpis`, so a figure can only differ if the facts differ.

Definitions (every rate is reported with its numerator and denominator):

- An incident belongs to the period of its whistle (`reported_at`; the first dispatch if the
  report never arrived) and to the areas of its grid. For `department` and `unit` it belongs to
  its first lead handoff (首接负责: the first receiver answers for it).
- A handoff belongs to the period of its dispatch, to its own department and unit, and to the
  grid and category of its incident (the incident's latest classification wins over the one
  the handoff was dispatched with). Feedback and breaches follow their incident / handoff.
- `handoffs_due`: dispatched handoffs whose report (报到) was owed: acknowledged, declined, or
  past `report_due_at` at `as_of`; a handoff a dispatcher withdrew (released, reassigned) before
  it was due and before anyone acknowledged it was never owed. Declining never helps a unit.
- on-time report rate = acknowledged with `acknowledged_at <= report_due_at` / handoffs due.
- response rate = acknowledged at all / handoffs due.
- bounce rate = declined / dispatched.
- resolution rate = incidents closed with outcome `resolved` / incidents closed (closed
  unresolved and duplicates are closed, never resolved). Handoff resolution rate = handoffs
  whose latest disposition is `resolved` / handoffs with a disposition.
- satisfaction rate = (满意 + 基本满意) / feedback given (every FeedbackGiven counts, so a
  reopened incident can contribute more than one verdict).
- reopen rate = incidents reopened at least once / incidents that reached verification.
- whistle rate (联动率) = incidents whose whistle summoned at least two distinct units as lead or
  co-operating (escalations excluded) / incidents.
- time to report = dispatch → first acknowledgement; time to resolve = report → the latest
  IncidentResolved (a resolution refused at verification was not the resolution). Mean and
  p90 by nearest rank (the smallest value with at least 90% of values at or below it).
- breaches = DeadlineBreached of every clock kind, less those withdrawn (DeadlineBreachWithdrawn:
  the awaited fact was stamped before due but reached the timer after it fired) (report 报到, on scene, resolution, verification),
  counted per kind; `report_breaches` is the report kind alone. A breach of a handoff's clock
  follows its handoff (period of dispatch, the handoff's unit); a breach of the incident's own
  clock (verification) follows its incident (period of the whistle, the first lead's unit).
- Periods: `day`, `week` (ISO week, Monday first, `2026-W10`) and `month` (`2026-03`) of the local
  date of the period instant. `kind` groups breaches only: one row per clock kind, and nothing
  else is counted in those rows (incidents and handoffs have no kind).
- The time-to-report distribution (`time_to_report_histogram`) counts the same durations as
  `time_to_report` into buckets.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from enum import StrEnum

from contracts.envelope import Envelope, Event
from contracts.events import (
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
    IncidentReclassified,
    IncidentReopened,
    IncidentReported,
    IncidentResolved,
)
from contracts.reference import ReferenceData
from contracts.vocabulary import DeadlineKind

RESOLVED = "resolved"
LEAD = "lead"
CO_OPERATING = "co_operating"
CONTENT_VERDICTS = frozenset({"satisfied", "basically_satisfied"})
UNKNOWN = "unknown"
ALL = "all"


class Dimension(StrEnum):
    """What the figures are grouped by."""

    ALL = "all"
    DEPARTMENT = "department"
    UNIT = "unit"
    GRID = "grid"
    COMMUNITY = "community"
    STATION = "station"
    DISTRICT = "district"
    CATEGORY = "category"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    KIND = "kind"


PERIODS = frozenset({Dimension.DAY, Dimension.WEEK, Dimension.MONTH})
BREACH_KINDS = tuple(kind.value for kind in DeadlineKind)
# Bucket upper bounds of the time-to-report distribution, in seconds: 1, 5, 15, 30 min, 1 h, 2 h, more.
TIME_TO_REPORT_BUCKETS = (60, 300, 900, 1800, 3600, 7200)


@dataclass(frozen=True)
class IncidentFact:
    """What the projection knows about one incident."""

    incident_id: str
    grid_id: str | None = None
    category: str | None = None
    reported_at: datetime | None = None
    resolved_at: datetime | None = None
    reopen_count: int = 0
    outcome: str | None = None
    closed_at: datetime | None = None


@dataclass(frozen=True)
class HandoffFact:
    """What the projection knows about one handoff."""

    handoff_id: str
    incident_id: str
    unit_id: str | None = None
    department: str | None = None
    role: str | None = None
    category: str | None = None
    grid_id: str | None = None
    dispatched_at: datetime | None = None
    report_due_at: datetime | None = None
    acknowledged_at: datetime | None = None
    declined_at: datetime | None = None
    withdrawn_at: datetime | None = None
    disposition: str | None = None
    resolved_at: datetime | None = None


@dataclass(frozen=True)
class FeedbackFact:
    """One FeedbackGiven."""

    event_id: str
    incident_id: str
    satisfaction: str


@dataclass(frozen=True)
class BreachFact:
    """One breached deadline of any clock kind."""

    deadline_id: str
    incident_id: str
    handoff_id: str | None
    unit_id: str | None
    due_at: datetime
    kind: str = DeadlineKind.REPORT.value


@dataclass(frozen=True)
class KpiFacts:
    """Every fact the figures are computed from."""

    incidents: Sequence[IncidentFact] = ()
    handoffs: Sequence[HandoffFact] = ()
    feedback: Sequence[FeedbackFact] = ()
    breaches: Sequence[BreachFact] = ()


# Events merged into the fact of their incident, and of their handoff.
INCIDENT_EVENTS = (
    IncidentReported,
    IncidentClassified,
    IncidentReclassified,
    HandoffDispatched,
    IncidentResolved,
    IncidentReopened,
    IncidentClosed,
)
HANDOFF_EVENTS = (
    HandoffDispatched,
    HandoffAcknowledged,
    HandoffDeclined,
    HandoffReassigned,
    HandoffReleased,
    HandoffResolved,
)


def standalone_fact(envelope: Envelope) -> FeedbackFact | BreachFact | None:
    """The fact an event adds on its own (feedback, a breach), keyed so a repeat adds nothing."""
    event = envelope.data
    if isinstance(event, FeedbackGiven):
        return FeedbackFact(str(envelope.id), event.incident_id, event.satisfaction.value)
    if isinstance(event, DeadlineBreached):
        return BreachFact(
            event.deadline_id, event.incident_id, event.handoff_id, event.unit_id, event.due_at, event.kind.value
        )
    return None


def withdrawn_breach(envelope: Envelope) -> str | None:
    """The deadline whose breach an event withdraws (its unit reported in time after all), or None."""
    event = envelope.data
    return event.deadline_id if isinstance(event, DeadlineBreachWithdrawn) else None


def _earliest(current: datetime | None, new: datetime) -> datetime:
    return new if current is None or new < current else current


def _latest(current: datetime | None, new: datetime) -> datetime:
    return new if current is None or new > current else current


def merge_into_incident(fact: IncidentFact, event: Event) -> IncidentFact:
    """The incident fact after one event; merges commute, so facts may arrive in any order or twice."""
    if isinstance(event, IncidentReported):
        return replace(fact, grid_id=event.grid_id, reported_at=event.reported_at)
    if isinstance(event, IncidentClassified | IncidentReclassified):
        # One topic, keyed by incident: a reclassification always arrives after what it corrects.
        return replace(fact, grid_id=fact.grid_id or event.grid_id, category=event.category.value)
    if isinstance(event, HandoffDispatched):
        return replace(fact, grid_id=fact.grid_id or event.grid_id, category=fact.category or event.category.value)
    if isinstance(event, IncidentResolved):
        return replace(fact, resolved_at=_latest(fact.resolved_at, event.resolved_at))
    if isinstance(event, IncidentReopened):
        return replace(fact, reopen_count=max(fact.reopen_count, event.reopen_count))
    if isinstance(event, IncidentClosed):
        return replace(fact, outcome=event.outcome.value, closed_at=event.closed_at)
    return fact


def merge_into_handoff(fact: HandoffFact, event: Event, occurred_at: datetime) -> HandoffFact:
    """The handoff fact after one event (`occurred_at` dates withdrawals, whose payloads carry no time)."""
    if isinstance(event, HandoffDispatched):
        return replace(
            fact,
            unit_id=event.unit_id,
            department=event.department,
            role=event.role.value,
            category=event.category.value,
            grid_id=event.grid_id,
            dispatched_at=event.dispatched_at,
            report_due_at=event.report_due_at,
        )
    if isinstance(event, HandoffAcknowledged):
        return replace(fact, acknowledged_at=_earliest(fact.acknowledged_at, event.acknowledged_at))
    if isinstance(event, HandoffDeclined):
        return replace(fact, declined_at=_earliest(fact.declined_at, event.declined_at))
    if isinstance(event, HandoffReassigned | HandoffReleased):
        return replace(fact, withdrawn_at=_earliest(fact.withdrawn_at, occurred_at))
    if isinstance(event, HandoffResolved):
        if fact.resolved_at is not None and fact.resolved_at > event.resolved_at:
            return fact
        return replace(fact, disposition=event.disposition.value, resolved_at=event.resolved_at)
    return fact


@dataclass(frozen=True)
class GridArea:
    """The areas a grid sits in: community → station → district."""

    community_id: str
    station_id: str
    district_id: str


def grid_areas(reference: ReferenceData) -> dict[str, GridArea]:
    """The area hierarchy of every grid of the reference data."""
    areas = {}
    for grid in reference.grids:
        station = reference.station_of(grid)
        areas[grid.id] = GridArea(grid.community_id, station.id, station.district_id)
    return areas


@dataclass(frozen=True)
class Ratio:
    """A rate that shows its working; `rate` is None when nothing was counted."""

    numerator: int
    denominator: int

    @property
    def rate(self) -> float | None:
        """numerator / denominator, or None for 0/0."""
        return self.numerator / self.denominator if self.denominator else None


@dataclass(frozen=True)
class Durations:
    """Count, mean and nearest-rank p90 of a set of durations, in seconds."""

    count: int
    mean_seconds: float | None
    p90_seconds: float | None


def durations(values: Iterable[float]) -> Durations:
    """Summarise durations in seconds (mean and nearest-rank p90)."""
    ordered = sorted(values)
    if not ordered:
        return Durations(0, None, None)
    return Durations(len(ordered), sum(ordered) / len(ordered), ordered[math.ceil(0.9 * len(ordered)) - 1])


@dataclass(frozen=True)
class KpiRow:
    """The figures of one group (one department, one district, one day, ...)."""

    group: str
    incidents: int
    handoffs_dispatched: int
    handoffs_due: int
    on_time_report: Ratio
    response: Ratio
    bounce: Ratio
    report_breaches: int
    # Breaches per clock kind (every kind present, zeros included) and their total.
    breaches: Mapping[str, int]
    resolution: Ratio
    handoff_resolution: Ratio
    satisfaction: Ratio
    reopen: Ratio
    whistle: Ratio
    time_to_report: Durations
    time_to_resolve: Durations


RATIO_FIELDS = (
    "on_time_report",
    "response",
    "bounce",
    "resolution",
    "handoff_resolution",
    "satisfaction",
    "reopen",
    "whistle",
)
DURATION_FIELDS = ("time_to_report", "time_to_resolve")
COUNT_FIELDS = ("incidents", "handoffs_dispatched", "handoffs_due", "report_breaches")


@dataclass
class _Tally:
    incidents: int = 0
    dispatched: int = 0
    due: int = 0
    acknowledged: int = 0
    on_time: int = 0
    declined: int = 0
    breaches: Counter[str] = field(default_factory=Counter)
    closed: int = 0
    closed_resolved: int = 0
    with_disposition: int = 0
    resolved_disposition: int = 0
    feedback: int = 0
    content: int = 0
    reached_verification: int = 0
    reopened: int = 0
    joint_whistles: int = 0
    report_seconds: list[float] = field(default_factory=list)
    resolve_seconds: list[float] = field(default_factory=list)

    def row(self, group: str) -> KpiRow:
        return KpiRow(
            group=group,
            incidents=self.incidents,
            handoffs_dispatched=self.dispatched,
            handoffs_due=self.due,
            on_time_report=Ratio(self.on_time, self.due),
            response=Ratio(self.acknowledged, self.due),
            bounce=Ratio(self.declined, self.dispatched),
            report_breaches=self.breaches[DeadlineKind.REPORT.value],
            breaches={**{kind: self.breaches[kind] for kind in BREACH_KINDS}, "total": sum(self.breaches.values())},
            resolution=Ratio(self.closed_resolved, self.closed),
            handoff_resolution=Ratio(self.resolved_disposition, self.with_disposition),
            satisfaction=Ratio(self.content, self.feedback),
            reopen=Ratio(self.reopened, self.reached_verification),
            whistle=Ratio(self.joint_whistles, self.incidents),
            time_to_report=durations(self.report_seconds),
            time_to_resolve=durations(self.resolve_seconds),
        )


def report_was_owed(handoff: HandoffFact, as_of: datetime) -> bool:
    """True when the handoff's unit owed its report (报到) by `as_of` (see the module docstring)."""
    if handoff.acknowledged_at is not None or handoff.declined_at is not None:
        return True
    if handoff.report_due_at is None or handoff.report_due_at > as_of:
        return False
    return handoff.withdrawn_at is None or handoff.withdrawn_at >= handoff.report_due_at


def compute_kpis(
    facts: KpiFacts,
    *,
    dimension: Dimension,
    as_of: datetime,
    areas: Mapping[str, GridArea],
    start: datetime | None = None,
    end: datetime | None = None,
    day_offset: timedelta = timedelta(hours=8),
) -> list[KpiRow]:
    """Figures per group of `dimension` for facts whose period instant lies in [start, end).

    `day_offset` is the local time zone's offset from UTC that decides which day an instant
    falls on (China Standard Time has no daylight saving, so a fixed +08:00 is exact).
    """
    local = timezone(day_offset)
    handoffs_by_incident: dict[str, list[HandoffFact]] = defaultdict(list)
    for h in facts.handoffs:
        if h.dispatched_at is not None:
            handoffs_by_incident[h.incident_id].append(h)
    incidents = {i.incident_id: i for i in facts.incidents}
    first_lead = {
        incident_id: min(leads, key=lambda h: (h.dispatched_at, h.handoff_id))
        for incident_id, hs in handoffs_by_incident.items()
        if (leads := [h for h in hs if h.role == LEAD])
    }

    def incident_instant(incident_id: str) -> datetime | None:
        incident = incidents.get(incident_id)
        if incident is not None and incident.reported_at is not None:
            return incident.reported_at
        dispatches = [h.dispatched_at for h in handoffs_by_incident.get(incident_id, ()) if h.dispatched_at]
        return min(dispatches, default=None)

    def in_range(instant: datetime | None) -> bool:
        if instant is None:
            return start is None and end is None
        return (start is None or instant >= start) and (end is None or instant < end)

    def area_group(grid_id: str | None) -> str:
        area = areas.get(grid_id or "")
        if dimension is Dimension.GRID:
            return grid_id or UNKNOWN
        if area is None:
            return UNKNOWN
        return {
            Dimension.COMMUNITY: area.community_id,
            Dimension.STATION: area.station_id,
            Dimension.DISTRICT: area.district_id,
        }[dimension]

    def group_of(incident_id: str, instant: datetime | None, handoff: HandoffFact | None) -> str:
        incident = incidents.get(incident_id)
        if dimension is Dimension.ALL:
            return ALL
        if dimension in PERIODS:
            return period_of(instant, dimension, local) if instant else UNKNOWN
        if dimension in (Dimension.DEPARTMENT, Dimension.UNIT):
            owner = handoff or first_lead.get(incident_id)
            if owner is None:
                return UNKNOWN
            value = owner.department if dimension is Dimension.DEPARTMENT else owner.unit_id
            return value or UNKNOWN
        if dimension is Dimension.CATEGORY:
            category = (incident.category if incident else None) or (handoff.category if handoff else None)
            return category or UNKNOWN
        grid_id = (incident.grid_id if incident else None) or (handoff.grid_id if handoff else None)
        return area_group(grid_id)

    tallies: dict[str, _Tally] = defaultdict(_Tally)
    handoffs = {h.handoff_id: h for hs in handoffs_by_incident.values() for h in hs}
    # Incidents, handoffs and feedback have no clock kind: a `kind` grouping counts breaches only.
    if dimension is not Dimension.KIND:
        incident_ids = set(incidents) | set(handoffs_by_incident)
        for incident_id in incident_ids:
            instant = incident_instant(incident_id)
            if not in_range(instant):
                continue
            tally = tallies[group_of(incident_id, instant, None)]
            _count_incident(tally, incidents.get(incident_id), handoffs_by_incident.get(incident_id, []))

        for h in handoffs.values():
            if in_range(h.dispatched_at):
                _count_handoff(tallies[group_of(h.incident_id, h.dispatched_at, h)], h, as_of)

        for feedback in facts.feedback:
            instant = incident_instant(feedback.incident_id)
            if in_range(instant):
                tally = tallies[group_of(feedback.incident_id, instant, None)]
                tally.feedback += 1
                tally.content += feedback.satisfaction in CONTENT_VERDICTS

    for breach in facts.breaches:
        owner: HandoffFact | None
        if breach.handoff_id is None:
            # The incident's own clock (verification): it follows the incident, like its feedback.
            owner, instant = None, incident_instant(breach.incident_id) or breach.due_at
        else:
            owner = handoffs.get(breach.handoff_id)
            if owner is None:
                # The dispatch has not arrived (facts cross topics in any order): attribute what we can.
                owner = HandoffFact(
                    handoff_id=breach.handoff_id,
                    incident_id=breach.incident_id,
                    unit_id=breach.unit_id,
                    dispatched_at=breach.due_at,
                )
            instant = owner.dispatched_at
        if in_range(instant):
            group = breach.kind if dimension is Dimension.KIND else group_of(breach.incident_id, instant, owner)
            tallies[group].breaches[breach.kind] += 1

    return [tally.row(group) for group, tally in sorted(tallies.items())]


def period_of(instant: datetime, dimension: Dimension, local: timezone) -> str:
    """The day (`2026-03-02`), ISO week (`2026-W10`) or month (`2026-03`) of an instant in local time."""
    date = instant.astimezone(local).date()
    if dimension is Dimension.WEEK:
        year, week, _ = date.isocalendar()
        return f"{year}-W{week:02d}"
    if dimension is Dimension.MONTH:
        return f"{date.year}-{date.month:02d}"
    return date.isoformat()


def report_seconds(handoff: HandoffFact) -> float | None:
    """Dispatch → first acknowledgement (报到) in seconds, or None when the unit never reported."""
    if handoff.acknowledged_at is None or handoff.dispatched_at is None:
        return None
    return (handoff.acknowledged_at - handoff.dispatched_at).total_seconds()


def time_to_report_histogram(
    facts: KpiFacts,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    bounds: Sequence[int] = TIME_TO_REPORT_BUCKETS,
) -> list[dict[str, int | None]]:
    """How many reports took up to each bound (the last bucket open-ended), for handoffs dispatched in [start, end)."""
    counts = [0] * (len(bounds) + 1)
    for handoff in facts.handoffs:
        seconds = report_seconds(handoff)
        if seconds is None or handoff.dispatched_at is None:
            continue
        if (start is not None and handoff.dispatched_at < start) or (end is not None and handoff.dispatched_at >= end):
            continue
        counts[next((i for i, bound in enumerate(bounds) if seconds <= bound), len(bounds))] += 1
    lower = [0, *bounds]
    return [
        {"from_seconds": lower[i], "to_seconds": bounds[i] if i < len(bounds) else None, "count": count}
        for i, count in enumerate(counts)
    ]


def _count_incident(tally: _Tally, incident: IncidentFact | None, handoffs: list[HandoffFact]) -> None:
    tally.incidents += 1
    summoned = {h.unit_id for h in handoffs if h.role in (LEAD, CO_OPERATING) and h.unit_id}
    tally.joint_whistles += len(summoned) >= 2
    if incident is None:
        return
    if incident.outcome is not None:
        tally.closed += 1
        tally.closed_resolved += incident.outcome == RESOLVED
    if incident.resolved_at is not None:
        tally.reached_verification += 1
        tally.reopened += incident.reopen_count > 0
        if incident.reported_at is not None:
            tally.resolve_seconds.append((incident.resolved_at - incident.reported_at).total_seconds())


def _count_handoff(tally: _Tally, handoff: HandoffFact, as_of: datetime) -> None:
    tally.dispatched += 1
    tally.declined += handoff.declined_at is not None
    if handoff.disposition is not None:
        tally.with_disposition += 1
        tally.resolved_disposition += handoff.disposition == RESOLVED
    seconds = report_seconds(handoff)
    if seconds is not None:
        tally.report_seconds.append(seconds)
    if not report_was_owed(handoff, as_of):
        return
    tally.due += 1
    if handoff.acknowledged_at is not None:
        tally.acknowledged += 1
        tally.on_time += handoff.report_due_at is not None and handoff.acknowledged_at <= handoff.report_due_at


def row_as_dict(row: KpiRow) -> dict[str, object]:
    """A JSON-ready row: counts, each rate with its numerator and denominator, durations in seconds."""
    document: dict[str, object] = {"group": row.group}
    for name in COUNT_FIELDS:
        document[name] = getattr(row, name)
    document["breaches"] = dict(row.breaches)
    for name in RATIO_FIELDS:
        ratio: Ratio = getattr(row, name)
        document[f"{name}_rate"] = {"numerator": ratio.numerator, "denominator": ratio.denominator, "rate": ratio.rate}
    for name in DURATION_FIELDS:
        stats: Durations = getattr(row, name)
        document[f"{name}_seconds"] = {"count": stats.count, "mean": stats.mean_seconds, "p90": stats.p90_seconds}
    return document


def flat_row(row: KpiRow) -> dict[str, object]:
    """`row_as_dict` flattened for CSV: `on_time_report_rate` becomes `on_time_report_rate_numerator`, ..."""
    flat: dict[str, object] = {}
    for name, value in row_as_dict(row).items():
        if isinstance(value, dict):
            flat |= {f"{name}_{part}": inner for part, inner in value.items()}
        else:
            flat[name] = value
    return flat


def flat_columns() -> list[str]:
    """Column names of the flat (CSV) form of a row, in order."""
    return list(flat_row(_Tally().row("")))
