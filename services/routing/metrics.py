"""Routing's own Prometheus metrics; every label comes from a closed set (no ids)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter

from contracts.envelope import Envelope
from contracts.events import HandoffDeclined, HandoffDispatched, IncidentEscalated


class RoutingMetrics:
    """Handoffs dispatched by department and role, declines by reason, escalations by level."""

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
