"""Health signals beyond "the dependencies answer": consumer lag, stuck consumers, event-loop lag.

A consumer group is stuck when it has records waiting (lag > 0) and has finished none of them
for the stall window: the broker and database may both answer while a wedged handler or a
lost partition assignment keeps the incident flow standing still, so readiness must say so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.runtime.logs import get_logger
from services.runtime.metrics import RuntimeMetrics

log = get_logger(__name__)


@dataclass
class StallDetector:
    """Decides from lag samples and progress times whether one consumer group is stuck (pure)."""

    stall_seconds: float
    backlog_since: float | None = None
    stuck_reason: str | None = None

    def observe(self, lag: int, last_progress: float | None, now: float) -> str | None:
        """Feed one lag sample taken at `now`; return why the group is stuck, or None."""
        if lag <= 0:
            self.backlog_since = None
            self.stuck_reason = None
            return None
        if self.backlog_since is None:
            self.backlog_since = now
        # Waiting starts when the backlog appeared or when the last record finished, whichever is later.
        waiting_from = max(self.backlog_since, last_progress if last_progress is not None else self.backlog_since)
        idle = now - waiting_from
        self.stuck_reason = (
            f"lag {lag} and no record processed for {idle:.0f}s (limit {self.stall_seconds:g}s)"
            if idle >= self.stall_seconds
            else None
        )
        return self.stuck_reason


class ProgressSource(Protocol):
    """What the monitor needs from an EventConsumer: its group and when it last finished a record."""

    name: str
    last_processed_at: float | None


@dataclass
class WatchedGroup:
    """One consumer group: where its progress comes from and how to reach its Kafka consumer."""

    progress: ProgressSource
    kafka_consumer: Callable[[], Any]
    detector: StallDetector
    partitions: set[tuple[str, int]] = field(default_factory=set)


async def partition_lag(kafka_consumer: Any, timeout: float = 2.0) -> dict[tuple[str, int], int]:
    """Lag per assigned partition of an aiokafka consumer: high watermark minus the group's committed offset."""
    if kafka_consumer is None or not hasattr(kafka_consumer, "assignment"):
        return {}
    lag: dict[tuple[str, int], int] = {}
    for tp in kafka_consumer.assignment():
        highwater = kafka_consumer.highwater(tp)
        if highwater is None:
            continue  # no fetch answered yet for this partition: nothing to compare
        # The committed offset, not the position: a fetched batch moves the position past records
        # that are still waiting behind a wedged handler, while offsets are committed only after processing.
        committed = await asyncio.wait_for(kafka_consumer.committed(tp), timeout=timeout)
        if committed is None:  # the group never committed here: it starts from the log's beginning
            committed = (await asyncio.wait_for(kafka_consumer.beginning_offsets([tp]), timeout=timeout))[tp]
        lag[(tp.topic, tp.partition)] = max(highwater - committed, 0)
    return lag


class ConsumerHealthMonitor:
    """Samples consumer lag into metrics and keeps each group's stuck verdict for readiness."""

    def __init__(
        self,
        metrics: RuntimeMetrics,
        *,
        stall_seconds: float,
        interval_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._stall_seconds = stall_seconds
        self._interval = interval_seconds
        self._monotonic = monotonic
        self.groups: list[WatchedGroup] = []

    def watch(self, progress: ProgressSource, kafka_consumer: Callable[[], Any]) -> None:
        """Follow one consumer group; `kafka_consumer` returns its live aiokafka consumer (or None)."""
        self.groups.append(WatchedGroup(progress, kafka_consumer, StallDetector(self._stall_seconds)))

    async def sample(self) -> None:
        """Read every group's lag once, publish it, and update the stuck verdicts."""
        for group in self.groups:
            try:
                lag = await partition_lag(group.kafka_consumer())
            except Exception as exc:  # noqa: BLE001 - a failed sample must not stop the monitor
                log.warning("consumer lag sample failed", group=group.progress.name, error=repr(exc)[:200])
                continue
            # Partitions revoked by a rebalance must not keep reporting their last lag.
            for topic, partition in group.partitions - lag.keys():
                self._metrics.consumer_lag.remove(group.progress.name, topic, str(partition))
            group.partitions = set(lag)
            for (topic, partition), records in lag.items():
                self._metrics.consumer_lag.labels(group.progress.name, topic, str(partition)).set(records)
            was_stuck = group.detector.stuck_reason is not None
            reason = group.detector.observe(sum(lag.values()), group.progress.last_processed_at, self._monotonic())
            self._metrics.consumer_stuck.labels(group.progress.name).set(1 if reason else 0)
            if reason and not was_stuck:
                log.error("consumer group stuck", group=group.progress.name, reason=reason)

    def stuck(self) -> dict[str, str]:
        """Reasons of the groups judged stuck at the last sample, by group."""
        return {g.progress.name: g.detector.stuck_reason for g in self.groups if g.detector.stuck_reason}

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            await self.sample()
            await asyncio.sleep(self._interval)


async def measure_event_loop_lag(metrics: RuntimeMetrics, interval_seconds: float = 0.5) -> None:
    """Sleep for a fixed interval and record how much later than asked the loop woke us."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval_seconds)
        metrics.event_loop_lag.observe(max(loop.time() - started - interval_seconds, 0.0))
