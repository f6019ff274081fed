"""Closure's own Prometheus metrics, counted from the events it emitted (labels are closed sets)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter

from contracts.envelope import Event
from contracts.events import (
    FeedbackGiven,
    IncidentClosed,
    IncidentEscalatedToCommandCentre,
    IncidentReopened,
    VerificationRejected,
)


class ClosureMetrics:
    """Closed incidents by outcome, reopens and command-centre escalations by trigger, feedback by satisfaction."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.closed = Counter(
            "gridwhistle_closure_incidents_closed_total",
            "Incidents closed, by outcome (resolved, closed_unresolved, duplicate).",
            ["outcome"],
            registry=registry,
        )
        self.reopens = Counter(
            "gridwhistle_closure_reopens_total",
            "Incidents reopened, by trigger (verification_rejected, not_satisfied).",
            ["trigger"],
            registry=registry,
        )
        self.escalations = Counter(
            "gridwhistle_closure_command_centre_escalations_total",
            "Incidents handed to the district command centre once the reopen cap was spent, by trigger.",
            ["trigger"],
            registry=registry,
        )
        self.feedback = Counter(
            "gridwhistle_closure_feedback_total",
            "Feedback given, by satisfaction.",
            ["satisfaction"],
            registry=registry,
        )

    def count(self, events: Iterable[Event]) -> None:
        """Count the events of one committed command."""
        events = list(events)
        trigger = "verification_rejected" if any(isinstance(e, VerificationRejected) for e in events) else "not_satisfied"
        for event in events:
            if isinstance(event, IncidentClosed):
                self.closed.labels(event.outcome.value).inc()
            elif isinstance(event, IncidentReopened):
                self.reopens.labels(trigger).inc()
            elif isinstance(event, IncidentEscalatedToCommandCentre):
                self.escalations.labels(trigger).inc()
            elif isinstance(event, FeedbackGiven):
                self.feedback.labels(event.satisfaction.value).inc()
