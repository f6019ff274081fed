"""The event catalogue: every fact that crosses a service boundary, for the whole lifecycle.

上报 (reported) → 分流 (classified, dispatched) → 报到 (acknowledged) → 处置 (on scene,
resolved) → 反馈 (verified, feedback) → closed. Each class is one type at one version.
"""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from contracts.envelope import Catalogue, Event
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

CATALOGUE = Catalogue()
register = CATALOGUE.register

class Location(BaseModel):
    """Where the incident is: coordinates and/or a street address."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    address: str | None = Field(default=None, max_length=300)


# --- intake ---------------------------------------------------------------------------------


@register
class IncidentReported(Event):
    """A grid worker blew the whistle (网格吹哨); the report is durably stored."""

    event_type = "IncidentReported"
    incident_id: str
    grid_id: str
    reporter_id: str
    description: str = Field(max_length=2000)
    location: Location
    category_hint: Category | None = None
    media: list[str] = Field(default_factory=list, max_length=10)
    occurred_at: AwareDatetime | None = None
    reported_at: AwareDatetime


@register
class DuplicateLinked(Event):
    """A report was linked to an earlier open incident as a probable duplicate."""

    event_type = "DuplicateLinked"
    incident_id: str
    original_incident_id: str
    reason: str = Field(max_length=300)


# --- classification -------------------------------------------------------------------------


@register
class IncidentClassified(Event):
    """Triage (分流) decided the category and urgency of an incident."""

    event_type = "IncidentClassified"
    incident_id: str
    grid_id: str
    category: Category
    urgency: Urgency
    priority: int = Field(ge=1, le=5, description="1 is the most pressing")
    confidence: float = Field(ge=0, le=1)
    rules_fired: list[str] = Field(default_factory=list)
    needs_review: bool = False
    classifier_version: str


@register
class IncidentReclassified(Event):
    """A dispatcher corrected the category or urgency; routing and deadlines follow."""

    event_type = "IncidentReclassified"
    incident_id: str
    grid_id: str
    category: Category
    urgency: Urgency
    previous_category: Category
    previous_urgency: Urgency
    reason: str = Field(min_length=1, max_length=500)
    actor_id: str


# --- routing / handoffs ---------------------------------------------------------------------


@register
class HandoffDispatched(Event):
    """A unit was summoned; its report clock runs from this instant, not from acceptance."""

    event_type = "HandoffDispatched"
    incident_id: str
    handoff_id: str
    unit_id: str
    department: str
    role: HandoffRole
    category: Category
    urgency: Urgency
    grid_id: str
    dispatched_at: AwareDatetime
    report_due_at: AwareDatetime
    escalation_level: int = Field(default=0, ge=0)
    bounce_count: int = Field(default=0, ge=0)
    replaces_handoff_id: str | None = None
    # Which versioned reference data (areas, units, responsibility list) and duty roster chose this
    # unit, so a decision can be explained after the data changed. Optional: older records lack them.
    reference_version: str | None = None
    roster_version: str | None = None


@register
class HandoffAcknowledged(Event):
    """The unit reported for duty (报到) and took responsibility."""

    event_type = "HandoffAcknowledged"
    incident_id: str
    handoff_id: str
    unit_id: str
    actor_id: str
    acknowledged_at: AwareDatetime
    late: bool = False


@register
class HandoffDeclined(Event):
    """The unit refused with a reason code; the incident returns to routing with the remaining budget."""

    event_type = "HandoffDeclined"
    incident_id: str
    handoff_id: str
    unit_id: str
    actor_id: str
    reason_code: DeclineReason
    reason_text: str = Field(default="", max_length=500)
    declined_at: AwareDatetime


@register
class HandoffReassigned(Event):
    """A dispatcher moved a handoff to another unit; the new handoff keeps the old deadline."""

    event_type = "HandoffReassigned"
    incident_id: str
    handoff_id: str
    from_unit_id: str
    to_unit_id: str
    new_handoff_id: str
    actor_id: str
    reason: str = Field(default="", max_length=500)


@register
class ResponderOnScene(Event):
    """A responder of the unit arrived at the scene."""

    event_type = "ResponderOnScene"
    incident_id: str
    handoff_id: str
    unit_id: str
    actor_id: str
    arrived_at: AwareDatetime


@register
class HandoffResolved(Event):
    """The unit finished its work with a disposition code (处置)."""

    event_type = "HandoffResolved"
    incident_id: str
    handoff_id: str
    unit_id: str
    role: HandoffRole
    actor_id: str
    disposition: Disposition
    note: str = Field(default="", max_length=2000)
    resolved_at: AwareDatetime


@register
class HandoffReleased(Event):
    """A co-operating or escalation handoff was released without further work."""

    event_type = "HandoffReleased"
    incident_id: str
    handoff_id: str
    unit_id: str
    reason: str = Field(default="", max_length=500)


@register
class IncidentEscalated(Event):
    """The incident climbed the escalation ladder to a team queue."""

    event_type = "IncidentEscalated"
    incident_id: str
    level: int = Field(ge=1)
    unit_id: str
    reason: str = Field(max_length=500)
    trigger_handoff_id: str | None = None


# --- deadlines ------------------------------------------------------------------------------


class _DeadlineFact(Event):
    event_type = "_DeadlineFact"
    incident_id: str
    deadline_id: str
    handoff_id: str | None = None
    kind: DeadlineKind
    due_at: AwareDatetime


@register
class DeadlineArmed(_DeadlineFact):
    """A deadline was stored durably and will fire at `due_at` unless cancelled."""

    event_type = "DeadlineArmed"
    urgency: Urgency
    unit_id: str | None = None


@register
class DeadlineWarned(_DeadlineFact):
    """A fraction of the deadline's window has elapsed without the awaited fact."""

    event_type = "DeadlineWarned"
    fraction: float = Field(gt=0, lt=1)
    fired_at: AwareDatetime


@register
class DeadlineBreached(_DeadlineFact):
    """The deadline passed without the awaited fact; emitted exactly once per deadline."""

    event_type = "DeadlineBreached"
    urgency: Urgency
    unit_id: str | None = None
    fired_at: AwareDatetime


@register
class DeadlineBreachWithdrawn(_DeadlineFact):
    """A breach was withdrawn: the awaited fact was stamped before the due instant but reached the
    timer only after it fired (e.g. it waited in its producer's outbox through a crash or outage).

    Consumers undo what the breach meant to them (a red item, a breach in the rates); routing never
    escalated on it, since it knew of the acknowledgement. Emitted at most once per deadline.
    """

    event_type = "DeadlineBreachWithdrawn"
    fact_at: AwareDatetime
    withdrawn_at: AwareDatetime
    reason: str = Field(max_length=200)


@register
class DeadlineCancelled(_DeadlineFact):
    """The awaited fact arrived before the deadline."""

    event_type = "DeadlineCancelled"
    cancelled_at: AwareDatetime
    reason: str = Field(max_length=200)


@register
class DeadlinePaused(_DeadlineFact):
    """The clock stopped, with a reason and an actor who is not the assignee."""

    event_type = "DeadlinePaused"
    actor_id: str
    reason: str = Field(min_length=1, max_length=500)
    paused_at: AwareDatetime


@register
class DeadlineResumed(_DeadlineFact):
    """The clock runs again; `due_at` is the new due instant."""

    event_type = "DeadlineResumed"
    actor_id: str
    resumed_at: AwareDatetime


# --- closure --------------------------------------------------------------------------------


@register
class IncidentResolved(Event):
    """The lead unit resolved and every co-operating unit resolved or was released."""

    event_type = "IncidentResolved"
    incident_id: str
    disposition: Disposition
    resolved_at: AwareDatetime


@register
class IncidentVerified(Event):
    """The grid worker (or a supervisor) confirmed the outcome on site (核查)."""

    event_type = "IncidentVerified"
    incident_id: str
    actor_id: str
    verified_at: AwareDatetime


@register
class VerificationRejected(Event):
    """The grid worker found the work not done; the incident reopens."""

    event_type = "VerificationRejected"
    incident_id: str
    actor_id: str
    reason: str = Field(min_length=1, max_length=500)
    rejected_at: AwareDatetime


@register
class FeedbackGiven(Event):
    """The reporter said how satisfied they are (回访)."""

    event_type = "FeedbackGiven"
    incident_id: str
    actor_id: str
    satisfaction: Satisfaction
    comment: str = Field(default="", max_length=1000)
    given_at: AwareDatetime


@register
class IncidentReopened(Event):
    """Verification was rejected or the reporter was not satisfied; handling starts again."""

    event_type = "IncidentReopened"
    incident_id: str
    reason: str = Field(max_length=500)
    reopen_count: int = Field(ge=1)
    reopened_at: AwareDatetime


@register
class IncidentEscalatedToCommandCentre(Event):
    """The reopen cap is spent: the district command centre takes the incident over (兜底) as its lead."""

    event_type = "IncidentEscalatedToCommandCentre"
    incident_id: str
    grid_id: str
    reopen_count: int = Field(ge=0)
    reason: str = Field(max_length=500)
    escalated_at: AwareDatetime


@register
class IncidentClosed(Event):
    """The loop is closed (限时办结); `outcome` says honestly whether it was resolved."""

    event_type = "IncidentClosed"
    incident_id: str
    outcome: ClosureOutcome
    satisfaction: Satisfaction | None = None
    closed_at: AwareDatetime

