"""The topic catalogue: one source of truth for code, provisioning (infra/topics.yaml) and docs.

Every topic has exactly one owning (producing) service, is keyed by incident id, and has a
dead-letter twin `<name>.dlq` that receives records its consumers can never process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One topic: who writes it, who reads it, and how the broker keeps it."""

    name: str
    owner: str
    consumers: tuple[str, ...]
    events: tuple[str, ...]
    partitions: int = 6
    retention_ms: int = 30 * DAY_MS
    cleanup_policy: str = "delete"
    key: str = "incident id"
    description: str = ""
    dead_letter_partitions: int = 3
    dead_letter_retention_ms: int = 90 * DAY_MS
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def dead_letter(self) -> str:
        """Name of the dead-letter twin."""
        return f"{self.name}.dlq"


INTAKE_INCIDENTS = TopicSpec(
    name="gridwhistle.intake.incidents",
    owner="intake",
    consumers=("classification", "closure", "console"),
    events=("IncidentReported", "DuplicateLinked"),
    description="Reports raised by grid workers (上报).",
)
CLASSIFICATION_DECISIONS = TopicSpec(
    name="gridwhistle.classification.decisions",
    owner="classification",
    consumers=("routing", "intake", "closure", "console"),
    events=("IncidentClassified", "IncidentReclassified"),
    description="Triage decisions: category and urgency (分流).",
)
ROUTING_HANDOFFS = TopicSpec(
    name="gridwhistle.routing.handoffs",
    owner="routing",
    consumers=("sla_timer", "intake", "closure", "console"),
    events=(
        "HandoffDispatched",
        "HandoffAcknowledged",
        "HandoffDeclined",
        "HandoffReassigned",
        "ResponderOnScene",
        "HandoffResolved",
        "HandoffReleased",
        "IncidentEscalated",
    ),
    description="Summoned units and what they did with their handoffs (报到, 处置).",
)
SLA_DEADLINES = TopicSpec(
    name="gridwhistle.sla.deadlines",
    owner="sla_timer",
    consumers=("routing", "intake", "closure", "console"),
    events=(
        "DeadlineArmed",
        "DeadlineWarned",
        "DeadlineBreached",
        "DeadlineBreachWithdrawn",
        "DeadlineCancelled",
        "DeadlinePaused",
        "DeadlineResumed",
    ),
    description="Deadline chain facts: armed, warned, breached (and withdrawn), cancelled, paused, resumed.",
)
CLOSURE_OUTCOMES = TopicSpec(
    name="gridwhistle.closure.outcomes",
    owner="closure",
    consumers=("routing", "intake", "sla_timer", "closure", "console"),
    events=(
        "IncidentResolved",
        "IncidentVerified",
        "VerificationRejected",
        "FeedbackGiven",
        "IncidentReopened",
        "IncidentEscalatedToCommandCentre",
        "IncidentClosed",
    ),
    description="Verification, feedback and closure (反馈, 限时办结).",
)

TOPICS: tuple[TopicSpec, ...] = (
    INTAKE_INCIDENTS,
    CLASSIFICATION_DECISIONS,
    ROUTING_HANDOFFS,
    SLA_DEADLINES,
    CLOSURE_OUTCOMES,
)


def topic_for_event(event_type: str) -> TopicSpec:
    """The topic an event type is published on."""
    for spec in TOPICS:
        if event_type in spec.events:
            return spec
    raise KeyError(f"no topic carries {event_type}")


def provisioning_document() -> dict:
    """The infra/topics.yaml document: every topic and dead-letter twin with broker settings."""
    rows = []
    for spec in TOPICS:
        rows.append(
            {
                "name": spec.name,
                "partitions": spec.partitions,
                "retention_ms": spec.retention_ms,
                "cleanup_policy": spec.cleanup_policy,
            }
        )
        rows.append(
            {
                "name": spec.dead_letter,
                "partitions": spec.dead_letter_partitions,
                "retention_ms": spec.dead_letter_retention_ms,
                "cleanup_policy": "delete",
            }
        )
    return {"topics": rows}
