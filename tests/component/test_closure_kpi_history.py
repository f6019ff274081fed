"""A deterministic generated history of incidents for the KPI tests, with its own record of the truth.

`expected_rows` computes the figures straight from that record, never through
`services.closure.kpi`, so the KPI tests compare two independent computations.

`generate_history` plays a few hundred incidents through the whole loop as the other services
(and closure) would publish them: acknowledgements on time and late, breaches of every clock
kind, declines with replacements, releases before and after the deadline, every disposition,
every satisfaction, rejected verifications, reopens up to the cap and the command centre's round
after it. Next to the envelopes it keeps a plain record
(`IncidentTruth`, `HandoffTruth`) from which the tests compute the expected figures themselves.
"""

from __future__ import annotations

import math
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from contracts.envelope import Envelope, Event
from contracts.events import (
    DeadlineBreached,
    FeedbackGiven,
    HandoffAcknowledged,
    HandoffDeclined,
    HandoffDispatched,
    HandoffReleased,
    HandoffResolved,
    IncidentClassified,
    IncidentClosed,
    IncidentEscalatedToCommandCentre,
    IncidentReclassified,
    IncidentReopened,
    IncidentReported,
    IncidentResolved,
    IncidentVerified,
    Location,
    VerificationRejected,
)
from contracts.reference import ReferenceData, load_reference_data
from contracts.vocabulary import (
    Category,
    ClosureOutcome,
    DeadlineKind,
    DeclineReason,
    Disposition,
    HandoffRole,
    Satisfaction,
    Urgency,
)
import pytest

from tests.support import envelope_for

HISTORY_START = datetime(2026, 3, 1, 16, 0, tzinfo=UTC)  # 2026-03-02 00:00 in China
HISTORY_DAYS = 7
MAX_REOPENS = 2
URGENT = {Category.VIOLENCE, Category.FIRE, Category.MEDICAL_EMERGENCY, Category.TRAFFIC_ACCIDENT, Category.MISSING_PERSON}
NAMESPACE = uuid.UUID("8a0c5a3e-6f7b-4a53-9d0e-2b1f3c4d5e6f")


@dataclass
class HandoffTruth:
    """One handoff as it really went."""

    handoff_id: str
    unit_id: str
    department: str
    role: HandoffRole
    dispatched_at: datetime
    due_at: datetime
    acked_at: datetime | None = None
    declined_at: datetime | None = None
    withdrawn_at: datetime | None = None
    report_breached: bool = False
    # Breaches of the handoff's other clocks (on scene, resolution).
    other_breaches: list[DeadlineKind] = field(default_factory=list)
    disposition: Disposition | None = None


@dataclass
class IncidentTruth:
    """One incident as it really went."""

    incident_id: str
    grid_id: str
    category: Category
    reported_at: datetime
    handoffs: list[HandoffTruth] = field(default_factory=list)
    resolved_at: datetime | None = None
    reopens: int = 0
    outcome: ClosureOutcome | None = None
    feedback: list[Satisfaction] = field(default_factory=list)
    escalated: bool = False
    verification_breaches: int = 0


@dataclass
class History:
    """The envelopes to publish, in order, and the truth they tell."""

    envelopes: list[Envelope]
    incidents: list[IncidentTruth]
    reference: ReferenceData


class _Player:
    """Plays one incident, appending envelopes and truth as it goes."""

    def __init__(self, rng: random.Random, reference: ReferenceData, truth: IncidentTruth, urgency: Urgency) -> None:
        self.rng, self.reference, self.truth, self.urgency = rng, reference, truth, urgency
        # The clocks other than report draw from their own generator, so adding them left the
        # rest of the history as it was.
        self.clocks = random.Random(truth.incident_id)
        self.envelopes: list[Envelope] = []
        self.window = timedelta(minutes=15) if urgency is Urgency.URGENT else timedelta(hours=2)
        grid = reference.grid(truth.grid_id)
        assert grid is not None
        self.grid = grid
        self.district = reference.district_of(grid)

    def emit(self, event: Event, at: datetime) -> None:
        self.envelopes.append(envelope_for(event, self.truth.incident_id, at=at, source="history"))

    def unit_for(self, department: str) -> str:
        if department == "police":
            officer = self.reference.officer(self.grid.officer_id)
            assert officer is not None
            return officer.unit_id
        unit = self.reference.department_unit(department, self.district.id)
        assert unit is not None, department
        return unit.id

    def dispatch(
        self, department: str, unit_id: str, role: HandoffRole, at: datetime, category: Category, *,
        due_at: datetime | None = None, replaces: str | None = None,
    ) -> HandoffTruth:
        handoff = HandoffTruth(
            handoff_id=str(uuid.uuid5(NAMESPACE, f"{self.truth.incident_id}/{len(self.truth.handoffs)}")),
            unit_id=unit_id, department=department, role=role, dispatched_at=at, due_at=due_at or at + self.window,
        )
        self.truth.handoffs.append(handoff)
        self.emit(
            HandoffDispatched(
                incident_id=self.truth.incident_id, handoff_id=handoff.handoff_id, unit_id=unit_id,
                department=department, role=role, category=category, urgency=self.urgency, grid_id=self.truth.grid_id,
                dispatched_at=at, report_due_at=handoff.due_at, replaces_handoff_id=replaces,
            ),
            at,
        )
        return handoff

    def breach(self, handoff: HandoffTruth) -> None:
        handoff.report_breached = True
        self.emit(
            DeadlineBreached(
                incident_id=self.truth.incident_id, deadline_id=str(uuid.uuid5(NAMESPACE, handoff.handoff_id + "/report")),
                handoff_id=handoff.handoff_id, kind=DeadlineKind.REPORT, due_at=handoff.due_at, urgency=self.urgency,
                unit_id=handoff.unit_id, fired_at=handoff.due_at,
            ),
            handoff.due_at,
        )

    def breach_other(self, kind: DeadlineKind, handoff: HandoffTruth | None, due_at: datetime) -> None:
        """A breach of an on-scene or resolution clock (of `handoff`) or of the incident's verification clock."""
        if handoff is not None:
            handoff.other_breaches.append(kind)
            owner = handoff.handoff_id
        else:
            self.truth.verification_breaches += 1
            owner = f"{self.truth.incident_id}/{self.truth.verification_breaches}"
        self.emit(
            DeadlineBreached(
                incident_id=self.truth.incident_id, deadline_id=str(uuid.uuid5(NAMESPACE, f"{owner}/{kind.value}")),
                handoff_id=handoff.handoff_id if handoff else None, kind=kind, due_at=due_at, urgency=self.urgency,
                unit_id=handoff.unit_id if handoff else None, fired_at=due_at,
            ),
            due_at,
        )

    def acknowledge(self, handoff: HandoffTruth, on_time: bool) -> datetime:
        if on_time:
            at = handoff.dispatched_at + (handoff.due_at - handoff.dispatched_at) * self.rng.uniform(0.05, 1.0)
        else:
            self.breach(handoff)
            at = handoff.due_at + timedelta(minutes=self.rng.randint(1, 90))
        handoff.acked_at = at
        self.emit(
            HandoffAcknowledged(
                incident_id=self.truth.incident_id, handoff_id=handoff.handoff_id, unit_id=handoff.unit_id,
                actor_id="responder", acknowledged_at=at, late=not on_time,
            ),
            at,
        )
        if self.clocks.random() < 0.15:  # reported, then slow to arrive on scene
            self.breach_other(DeadlineKind.ON_SCENE, handoff, at + timedelta(minutes=30))
        return at

    def decline(self, handoff: HandoffTruth) -> datetime:
        at = handoff.dispatched_at + timedelta(minutes=self.rng.randint(1, 10))
        handoff.declined_at = at
        self.emit(
            HandoffDeclined(
                incident_id=self.truth.incident_id, handoff_id=handoff.handoff_id, unit_id=handoff.unit_id,
                actor_id="responder", reason_code=self.rng.choice(list(DeclineReason)), declined_at=at,
            ),
            at,
        )
        return at

    def release(self, handoff: HandoffTruth, at: datetime) -> None:
        handoff.withdrawn_at = at
        self.emit(HandoffReleased(incident_id=self.truth.incident_id, handoff_id=handoff.handoff_id, unit_id=handoff.unit_id), at)

    def resolve(self, handoff: HandoffTruth, disposition: Disposition, at: datetime) -> None:
        if self.clocks.random() < 0.15:  # the work took longer than its resolution clock
            self.breach_other(DeadlineKind.RESOLUTION, handoff, at - timedelta(minutes=5))
        handoff.disposition = disposition
        self.emit(
            HandoffResolved(
                incident_id=self.truth.incident_id, handoff_id=handoff.handoff_id, unit_id=handoff.unit_id,
                role=handoff.role, actor_id="responder", disposition=disposition, resolved_at=at,
            ),
            at,
        )

    def summon(self, department: str, role: HandoffRole, at: datetime, category: Category) -> tuple[HandoffTruth | None, datetime]:
        """Dispatch a unit and play its report; returns the handoff that will work (or None) and when it reported."""
        handoff = self.dispatch(department, self.unit_for(department), role, at, category)
        roll = self.rng.random()
        if role is HandoffRole.CO_OPERATING and roll < 0.12:  # never reports: breached, then released
            self.breach(handoff)
            self.release(handoff, handoff.due_at + timedelta(minutes=10))
            return None, handoff.due_at
        if role is HandoffRole.CO_OPERATING and roll < 0.18:  # released before anyone had to report
            self.release(handoff, at + timedelta(minutes=1))
            return None, at
        if roll < 0.30:  # bounced: the command centre takes over with the remaining budget (兜底)
            declined_at = self.decline(handoff)
            replacement = self.dispatch(
                "command", self.district.command_centre_unit_id, role, declined_at, category, due_at=handoff.due_at, replaces=handoff.handoff_id
            )
            return replacement, self.acknowledge(replacement, on_time=self.rng.random() < 0.8)
        return handoff, self.acknowledge(handoff, on_time=roll < 0.80)


def _play(rng: random.Random, reference: ReferenceData, index: int, grid_ids: list[str]) -> _Player:
    incident_id = str(uuid.uuid5(NAMESPACE, f"incident/{index}"))
    category = rng.choice(list(Category))
    urgency = Urgency.URGENT if category in URGENT else Urgency.GENERAL
    reported_at = HISTORY_START + timedelta(seconds=rng.randrange(HISTORY_DAYS * 24 * 3600))
    grid_id = rng.choice(grid_ids)
    truth = IncidentTruth(incident_id, grid_id, category, reported_at)
    player = _Player(rng, reference, truth, urgency)
    player.emit(
        IncidentReported(
            incident_id=incident_id, grid_id=grid_id, reporter_id=f"resident-{index}", description="generated",
            location=Location(address="生成路1号"), reported_at=reported_at,
        ),
        reported_at,
    )
    classified_at = reported_at + timedelta(minutes=1)
    player.emit(
        IncidentClassified(
            incident_id=incident_id, grid_id=grid_id, category=category, urgency=urgency, priority=3,
            confidence=0.8, classifier_version="history",
        ),
        classified_at,
    )
    dispatched_category = category
    if rng.random() < 0.1:  # a dispatcher corrects the category after dispatch; the KPIs follow the correction
        truth.category = rng.choice([c for c in Category if c is not category])
        player.emit(
            IncidentReclassified(
                incident_id=incident_id, grid_id=grid_id, category=truth.category, urgency=urgency,
                previous_category=category, previous_urgency=urgency, reason="复核", actor_id="dispatcher",
            ),
            classified_at + timedelta(minutes=5),
        )
    responsibility = reference.responsibility(category)
    assert responsibility is not None
    dispatched_at = classified_at + timedelta(minutes=1)
    lead, reported = player.summon(responsibility.lead_department, HandoffRole.LEAD, dispatched_at, dispatched_category)
    working = [
        player.summon(dept, HandoffRole.CO_OPERATING, dispatched_at, dispatched_category)
        for dept in responsibility.co_departments
    ]
    assert lead is not None
    if rng.random() < 0.08:  # still being handled
        return player
    finished = reported
    for handoff, co_reported in working:
        if handoff is not None:
            finished = max(finished, co_reported) + timedelta(minutes=rng.randint(5, 120))
            player.resolve(handoff, rng.choice([Disposition.RESOLVED] * 4 + [Disposition.REFERRED]), finished)
    _close_the_loop(rng, player, lead, max(finished, reported), dispatched_category)
    return player


def _close_the_loop(rng: random.Random, player: _Player, lead: HandoffTruth, after: datetime, category: Category) -> None:
    truth = player.truth
    dispositions = [Disposition.RESOLVED] * 13 + [
        Disposition.REFERRED, Disposition.REFERRED, Disposition.UNFOUNDED, Disposition.UNFOUNDED,
        Disposition.NOT_RESOLVABLE, Disposition.DUPLICATE, Disposition.DUPLICATE,
    ]
    while True:
        resolved_at = after + timedelta(minutes=rng.randint(10, 240))
        disposition = rng.choice(dispositions)
        player.resolve(lead, disposition, resolved_at)
        truth.resolved_at = resolved_at
        player.emit(IncidentResolved(incident_id=truth.incident_id, disposition=disposition, resolved_at=resolved_at), resolved_at)
        if rng.random() < 0.05:  # awaiting verification
            return
        if player.clocks.random() < 0.2:  # verified late: the incident's own clock breached
            player.breach_other(DeadlineKind.VERIFICATION, None, resolved_at + timedelta(minutes=50))
        at = resolved_at + timedelta(hours=1)
        verdict: Satisfaction | None = None  # None: refused at verification, before any feedback
        if rng.random() < 0.15:
            player.emit(
                VerificationRejected(incident_id=truth.incident_id, actor_id="W", reason="没修好", rejected_at=at), at
            )
        else:
            player.emit(IncidentVerified(incident_id=truth.incident_id, actor_id="W", verified_at=at), at)
            at += timedelta(hours=2)
            satisfaction = rng.choice(
                [Satisfaction.SATISFIED] * 2 + [Satisfaction.BASICALLY_SATISFIED, Satisfaction.NOT_SATISFIED]
            )
            truth.feedback.append(satisfaction)
            verdict = satisfaction
            player.emit(
                FeedbackGiven(incident_id=truth.incident_id, actor_id="R", satisfaction=satisfaction, given_at=at), at
            )
            if satisfaction is not Satisfaction.NOT_SATISFIED:
                outcome = {
                    Disposition.RESOLVED: ClosureOutcome.RESOLVED, Disposition.DUPLICATE: ClosureOutcome.DUPLICATE
                }.get(disposition, ClosureOutcome.CLOSED_UNRESOLVED)
                truth.outcome = outcome
                player.emit(
                    IncidentClosed(incident_id=truth.incident_id, outcome=outcome, satisfaction=satisfaction, closed_at=at), at
                )
                return
        if truth.reopens >= MAX_REOPENS and not truth.escalated:
            # The cap is spent: the district command centre takes the lead for one more round.
            truth.escalated = True
            player.emit(
                IncidentEscalatedToCommandCentre(
                    incident_id=truth.incident_id, grid_id=truth.grid_id, reopen_count=truth.reopens,
                    reason="reopen cap reached", escalated_at=at,
                ),
                at,
            )
            lead = player.dispatch(
                "command", player.district.command_centre_unit_id, HandoffRole.LEAD, at + timedelta(minutes=1), category
            )
            after = player.acknowledge(lead, on_time=True)
            continue
        if truth.reopens >= MAX_REOPENS:
            truth.outcome = ClosureOutcome.CLOSED_UNRESOLVED
            player.emit(
                IncidentClosed(
                    incident_id=truth.incident_id, outcome=ClosureOutcome.CLOSED_UNRESOLVED, satisfaction=verdict, closed_at=at
                ),
                at,
            )
            return
        truth.reopens += 1
        player.emit(
            IncidentReopened(incident_id=truth.incident_id, reason="重办", reopen_count=truth.reopens, reopened_at=at), at
        )
        # Routing re-dispatches the lead's unit, which reports on time this round.
        lead = player.dispatch(lead.department, lead.unit_id, HandoffRole.LEAD, at + timedelta(minutes=1), category)
        after = player.acknowledge(lead, on_time=True)


def generate_history(incidents: int = 240, seed: int = 2026, grids: int = 36) -> History:
    """A reproducible history of `incidents` incidents over a week in `grids` grids of the demo city."""
    rng = random.Random(seed)
    reference = load_reference_data(None)
    # Grids from every district, so each area level has several groups.
    grid_ids = sorted(rng.sample([g.id for g in reference.grids], grids))
    players = [_play(rng, reference, index, grid_ids) for index in range(incidents)]
    return History(
        envelopes=[e for p in players for e in p.envelopes],
        incidents=[p.truth for p in players],
        reference=reference,
    )


CHINA = timedelta(hours=8)
DIMENSIONS = (
    "all", "department", "unit", "grid", "community", "station", "district", "category", "day", "week", "month", "kind",
)
KINDS = ("report", "on_scene", "resolution", "verification")
# Every deadline of the history is past by then.
AS_OF = HISTORY_START + timedelta(days=40)


def expected_rows(
    history: History, dimension: str, start: datetime | None = None, end: datetime | None = None
) -> dict[str, dict[str, object]]:
    """The figures per group, computed straight from the generator's record."""
    reference: ReferenceData = history.reference

    def area(incident: IncidentTruth) -> str:
        grid = reference.grid(incident.grid_id)
        assert grid is not None
        return {
            "grid": grid.id,
            "community": grid.community_id,
            "station": reference.station_of(grid).id,
            "district": reference.district_of(grid).id,
        }[dimension]

    def period(instant: datetime) -> str:
        local = (instant + CHINA).date()
        if dimension == "week":
            return f"{local.isocalendar().year}-W{local.isocalendar().week:02d}"
        if dimension == "month":
            return local.strftime("%Y-%m")
        return local.isoformat()

    def incident_group(incident: IncidentTruth) -> str:
        first_lead = next(h for h in incident.handoffs if h.role is HandoffRole.LEAD)
        if dimension == "all":
            return "all"
        if dimension == "department":
            return first_lead.department
        if dimension == "unit":
            return first_lead.unit_id
        if dimension == "category":
            return incident.category.value
        if dimension in ("day", "week", "month"):
            return period(incident.reported_at)
        return area(incident)

    def handoff_group(incident: IncidentTruth, handoff) -> str:
        if dimension == "department":
            return handoff.department
        if dimension == "unit":
            return handoff.unit_id
        if dimension in ("day", "week", "month"):
            return period(handoff.dispatched_at)
        return incident_group(incident)

    def within(instant: datetime) -> bool:
        return (start is None or instant >= start) and (end is None or instant < end)

    groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for incident in history.incidents:
        if dimension == "kind":  # breaches only, one group per clock kind
            for h in incident.handoffs:
                if within(h.dispatched_at):
                    groups["report"]["breaches"] += ["report"] if h.report_breached else []
                    for kind in h.other_breaches:
                        groups[kind.value]["breaches"].append(kind.value)
            if within(incident.reported_at):
                groups["verification"]["breaches"] += ["verification"] * incident.verification_breaches
            continue
        if within(incident.reported_at):
            g = groups[incident_group(incident)]
            g["incidents"].append(incident.incident_id)
            units = {h.unit_id for h in incident.handoffs if h.role is not HandoffRole.ESCALATION}
            g["joint"].append(len(units) >= 2)
            if incident.outcome is not None:
                g["closed"].append(incident.outcome is ClosureOutcome.RESOLVED)
            if incident.resolved_at is not None:
                g["reached_verification"].append(incident.reopens > 0)
                g["resolve_seconds"].append((incident.resolved_at - incident.reported_at).total_seconds())
            g["feedback"] += [s in (Satisfaction.SATISFIED, Satisfaction.BASICALLY_SATISFIED) for s in incident.feedback]
            g["breaches"] += ["verification"] * incident.verification_breaches
        for h in incident.handoffs:
            if not within(h.dispatched_at):
                continue
            g = groups[handoff_group(incident, h)]
            g["dispatched"].append(h.declined_at is not None)
            g["breaches"] += ["report"] if h.report_breached else []
            g["breaches"] += [kind.value for kind in h.other_breaches]
            if h.disposition is not None:
                g["dispositions"].append(h.disposition.value == "resolved")
            if h.acked_at is not None:
                g["report_seconds"].append((h.acked_at - h.dispatched_at).total_seconds())
            withdrawn_early = h.withdrawn_at is not None and h.withdrawn_at < h.due_at and h.acked_at is None
            if not withdrawn_early:  # every deadline of the history is past at AS_OF
                g["owed"].append((h.acked_at is not None, h.acked_at is not None and h.acked_at <= h.due_at))

    def ratio(flags: list[bool]) -> dict[str, object]:
        return {"numerator": sum(flags), "denominator": len(flags), "rate": sum(flags) / len(flags) if flags else None}

    def stats(values: list[float]) -> dict[str, object]:
        ordered = sorted(values)
        if not ordered:
            return {"count": 0, "mean": None, "p90": None}
        return {"count": len(ordered), "mean": sum(ordered) / len(ordered), "p90": ordered[math.ceil(len(ordered) * 0.9) - 1]}

    return {
        group: {
            "group": group,
            "incidents": len(g["incidents"]),
            "handoffs_dispatched": len(g["dispatched"]),
            "handoffs_due": len(g["owed"]),
            "report_breaches": g["breaches"].count("report"),
            "breaches": {**{kind: g["breaches"].count(kind) for kind in KINDS}, "total": len(g["breaches"])},
            "on_time_report_rate": ratio([on_time for _, on_time in g["owed"]]),
            "response_rate": ratio([acked for acked, _ in g["owed"]]),
            "bounce_rate": ratio(g["dispatched"]),
            "resolution_rate": ratio(g["closed"]),
            "handoff_resolution_rate": ratio(g["dispositions"]),
            "satisfaction_rate": ratio(g["feedback"]),
            "reopen_rate": ratio(g["reached_verification"]),
            "whistle_rate": ratio(g["joint"]),
            "time_to_report_seconds": stats(g["report_seconds"]),
            "time_to_resolve_seconds": stats(g["resolve_seconds"]),
        }
        for group, g in groups.items()
    }


def assert_same_figures(actual_rows: list[dict], expected: dict[str, dict]) -> None:
    """Exact counts, numerators and denominators; float equality only up to rounding."""
    actual = {row["group"]: row for row in actual_rows}
    assert sorted(actual) == sorted(expected)
    for group, want in expected.items():
        got, wanted = _flat(actual[group]), _flat(want)
        assert got.keys() == wanted.keys(), group
        for name, value in wanted.items():
            if isinstance(value, float):
                assert got[name] == pytest.approx(value, rel=1e-9), (group, name)
            else:
                assert got[name] == value, (group, name)


def _flat(row: dict) -> dict:
    flat = {}
    for name, value in row.items():
        if isinstance(value, dict):
            flat |= {f"{name}.{part}": inner for part, inner in value.items()}
        else:
            flat[name] = value
    return flat


def test_the_generated_history_covers_every_case_the_kpis_distinguish():
    history = generate_history()
    handoffs = [h for i in history.incidents for h in i.handoffs]
    assert len(history.incidents) == 240
    assert any(h.acked_at and h.acked_at <= h.due_at for h in handoffs)
    assert any(h.acked_at and h.acked_at > h.due_at for h in handoffs)
    assert any(h.report_breached and h.acked_at is None for h in handoffs)
    assert {k for h in handoffs for k in h.other_breaches} == {DeadlineKind.ON_SCENE, DeadlineKind.RESOLUTION}
    assert any(i.verification_breaches for i in history.incidents)
    assert any(i.escalated and i.outcome is ClosureOutcome.CLOSED_UNRESOLVED for i in history.incidents)
    assert any(i.escalated and i.outcome is not ClosureOutcome.CLOSED_UNRESOLVED for i in history.incidents)
    assert any(h.declined_at for h in handoffs)
    assert any(h.withdrawn_at and h.withdrawn_at < h.due_at for h in handoffs)
    assert {h.disposition for h in handoffs} >= set(Disposition)
    assert {s for i in history.incidents for s in i.feedback} == set(Satisfaction)
    assert {i.outcome for i in history.incidents} == {*ClosureOutcome, None}
    assert max(i.reopens for i in history.incidents) == MAX_REOPENS
    assert any(i.resolved_at is None for i in history.incidents)
    assert len({i.grid_id for i in history.incidents}) > 30
    assert len({i.reported_at.date() for i in history.incidents}) >= HISTORY_DAYS


def test_the_generated_history_is_the_same_every_time():
    first, second = generate_history(incidents=20), generate_history(incidents=20)
    def facts(history: History) -> list[tuple[str, str]]:
        return [(e.type, e.data.model_dump_json()) for e in history.envelopes]  # envelope ids are fresh each time

    assert facts(first) == facts(second)
