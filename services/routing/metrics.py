"""Routing's own Prometheus metrics; every label comes from a closed set (no ids)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

from contracts.envelope import Envelope
from contracts.events import HandoffDeclined, HandoffDispatched, IncidentEscalated
from services.routing.domain import Handoff

# 30 s to 4 h: the report limits are 15 minutes (urgent) and 2 hours (general).
TIME_TO_REPORT_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)


class RoutingMetrics:
    """Handoffs dispatched by department and role, declines by reason, escalations by level, stale signals."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.dispatched = Counter(
            "gridwhistle_routing_handoffs_dispatched_total",
            "Handoffs dispatched, by department and role.",
            ["department", "role"],
            registry=registry,
        )
        self.declined = Counter(
            "gridwhistle_routing_declines_total", "Handoffs declined, by reason code.", ["reason"], registry=registry
        )
        self.escalated = Counter(
            "gridwhistle_routing_escalations_total", "Escalations, by ladder level.", ["level"], registry=registry
        )
        self.stale_breaches_ignored = Counter(
            "gridwhistle_routing_stale_breaches_ignored_total",
            "Deadline warnings and breaches not escalated because the unit had reported by the due instant.",
            ["signal"],
            registry=registry,
        )
        self.time_to_report = Histogram(
            "gridwhistle_routing_time_to_report_seconds",
            "Dispatch to report for duty (报到) of each handoff, by department and urgency.",
            ["department", "urgency"],
            buckets=TIME_TO_REPORT_BUCKETS,
            registry=registry,
        )

    def observe_report(self, handoff: Handoff) -> None:
        """Record how long a unit took to report for duty after it was summoned."""
        if handoff.acknowledged_at is not None:
            seconds = (handoff.acknowledged_at - handoff.dispatched_at).total_seconds()
            self.time_to_report.labels(handoff.department, handoff.urgency.value).observe(max(seconds, 0.0))

    def count(self, envelopes: Iterable[Envelope]) -> None:
        """Count the facts of one committed transaction."""
        for envelope in envelopes:
            data = envelope.data
            if isinstance(data, HandoffDispatched):
                self.dispatched.labels(data.department, data.role.value).inc()
            elif isinstance(data, HandoffDeclined):
                self.declined.labels(data.reason_code.value).inc()
            elif isinstance(data, IncidentEscalated):
                self.escalated.labels(str(data.level)).inc()
