"""Prometheus metrics of the shared runtime; one registry per service app (never a global)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, GCCollector, Histogram, ProcessCollector


class RuntimeMetrics:
    """Counters and gauges every service exposes, named gridwhistle_<service>_<noun>_<unit>."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # The client's standard process_* (CPU, resident memory, open files) and python_gc_* series.
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        p = f"gridwhistle_{service}"
        self.consumed = Counter(
            f"{p}_events_consumed_total",
            "Records consumed, by topic, event type and outcome (processed, duplicate, ignored, dead_lettered).",
            ["topic", "event_type", "outcome"],
            registry=self.registry,
        )
        self.handler_seconds = Histogram(
            f"{p}_handler_duration_seconds",
            "Time to process one record inside its transaction.",
            ["topic"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.dead_lettered = Counter(
            f"{p}_dead_letters_total",
            "Records sent to a dead-letter topic, by source topic and reason.",
            ["topic", "reason"],
            registry=self.registry,
        )
        self.retries = Counter(
            f"{p}_handler_retries_total",
            "Handler attempts that failed and were retried, by kind (handler, infrastructure, conflict: a lost deadlock).",
            ["topic", "kind"],
            registry=self.registry,
        )
        self.published = Counter(
            f"{p}_outbox_published_total",
            "Outbox rows published to Kafka, by topic.",
            ["topic"],
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            f"{p}_outbox_backlog_events",
            "Outbox rows not yet published.",
            registry=self.registry,
        )
        self.outbox_oldest_age = Gauge(
            f"{p}_outbox_oldest_age_seconds",
            "Age of the oldest unpublished outbox row (0 when empty).",
            registry=self.registry,
        )
        self.requests_refused = Counter(
            f"{p}_http_requests_refused_total",
            "API requests answered 503 with Retry-After: too many in flight (overloaded), or the database busy or unreachable.",
            ["reason"],
            registry=self.registry,
        )
        self.relay_failures = Counter(
            f"{p}_outbox_relay_failures_total",
            "Relay rounds that failed to publish (broker unreachable, timeout).",
            registry=self.registry,
        )
        # Partition labels are bounded by the topic catalogue's partition counts.
        self.consumer_lag = Gauge(
            f"{p}_consumer_lag_records",
            "Records between the partition's high watermark and the group's committed offset, by group, topic, partition.",
            ["group", "topic", "partition"],
            registry=self.registry,
        )
        self.consumer_last_processed = Gauge(
            f"{p}_consumer_last_processed_timestamp_seconds",
            "Unix time of the last record a consumer group finished (any outcome).",
            ["group"],
            registry=self.registry,
        )
        self.consumer_stuck = Gauge(
            f"{p}_consumer_stuck",
            "1 while a consumer group has lag but processed nothing for the configured stall window.",
            ["group"],
            registry=self.registry,
        )
        self.event_loop_lag = Histogram(
            f"{p}_event_loop_lag_seconds",
            "How late the event loop woke a periodic probe (sleep overshoot): time the loop was blocked.",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
