"""Prometheus metrics of the SLA timer, on the service's own registry; labels are closed sets."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# 1 ms to 10 s: a healthy scheduler fires within a few milliseconds of due; seconds mean trouble.
LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class SlaTimerMetrics:
    """Pending gauge, lifecycle counters by urgency and kind, and firing lateness."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p = "gridwhistle_sla_timer"
        self.pending = Gauge(
            f"{p}_deadlines_pending",
            "Deadlines not yet fired or cancelled, by urgency and state (armed, paused).",
            ["urgency", "state"],
            registry=registry,
        )
        self.armed = Counter(
            f"{p}_deadlines_armed_total", "Deadlines armed, by urgency and kind.", ["urgency", "kind"], registry=registry
        )
        self.fired = Counter(
            f"{p}_signals_fired_total",
            "Scheduler signals emitted, by urgency, kind and signal (warning, breach).",
            ["urgency", "kind", "signal"],
            registry=registry,
        )
        self.breached = Counter(
            f"{p}_deadlines_breached_total", "Deadlines breached, by urgency and kind.", ["urgency", "kind"], registry=registry
        )
        self.withdrawn = Counter(
            f"{p}_breaches_withdrawn_total",
            "Breaches withdrawn because the awaited fact, stamped before due, was consumed after the firing.",
            ["urgency", "kind"],
            registry=registry,
        )
        self.cancelled = Counter(
            f"{p}_deadlines_cancelled_total",
            "Deadlines cancelled before firing, by urgency and kind.",
            ["urgency", "kind"],
            registry=registry,
        )
        self.late_acks = Counter(
            f"{p}_late_acknowledgements_total",
            "Acknowledgements consumed after their report deadline fired, by urgency.",
            ["urgency"],
            registry=registry,
        )
        self.lateness = Histogram(
            f"{p}_breach_lateness_seconds",
            "fired_at - due_at of each breach: how late the scheduler fired.",
            ["urgency"],
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self.warning_lateness = Histogram(
            f"{p}_warning_lateness_seconds",
            "fired_at - warning instant of each warning: how late the scheduler warned.",
            ["urgency"],
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self.held_partitions = Gauge(
            f"{p}_held_partitions",
            "Source partitions with due deadlines held until their consumer catches up with the log.",
            registry=registry,
        )
        self.forced_fires = Counter(
            f"{p}_incomplete_view_releases_total",
            "Times a partition was released after the hold limit although its consumer was still behind, by topic.",
            ["topic"],
            registry=registry,
        )
