"""Stuck-consumer detection and lag sampling, without a broker (times are given by hand)."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.structs import TopicPartition

from services.runtime.health import ConsumerHealthMonitor, StallDetector
from services.runtime.metrics import RuntimeMetrics


def test_a_backlog_with_no_progress_for_the_stall_window_is_stuck():
    detector = StallDetector(stall_seconds=60)
    assert detector.observe(lag=5, last_progress=None, now=1000) is None
    assert detector.observe(lag=7, last_progress=None, now=1059) is None
    reason = detector.observe(lag=9, last_progress=None, now=1060)
    assert reason is not None and "lag 9" in reason and "60s" in reason


def test_progress_inside_the_window_keeps_a_busy_consumer_healthy():
    detector = StallDetector(stall_seconds=60)
    detector.observe(lag=500, last_progress=None, now=1000)
    assert detector.observe(lag=480, last_progress=1050, now=1100) is None
    assert detector.observe(lag=470, last_progress=1050, now=1110) is not None


def test_an_idle_consumer_with_no_lag_is_never_stuck_and_a_drained_backlog_resets():
    detector = StallDetector(stall_seconds=60)
    assert detector.observe(lag=0, last_progress=None, now=0) is None
    assert detector.observe(lag=0, last_progress=None, now=10_000) is None
    detector.observe(lag=3, last_progress=None, now=10_000)
    assert detector.observe(lag=3, last_progress=None, now=10_100) is not None
    assert detector.observe(lag=0, last_progress=None, now=10_101) is None
    assert detector.observe(lag=1, last_progress=None, now=10_102) is None  # a new backlog starts its own window


@dataclass
class FakeProgress:
    name: str
    last_processed_at: float | None = None


class FakeKafkaConsumer:
    """The aiokafka consumer calls the lag sampler uses; None means the group never committed."""

    def __init__(self, commits: dict[TopicPartition, int | None], highwaters: dict[TopicPartition, int | None]) -> None:
        self.commits = commits
        self.highwaters = highwaters

    def assignment(self) -> set[TopicPartition]:
        return set(self.commits)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters[tp]

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.commits[tp]

    async def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 1 for tp in partitions}  # as if retention had deleted offset 0


def lag_samples(metrics: RuntimeMetrics) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["group"], s.labels["topic"], s.labels["partition"]): s.value
        for s in metrics.consumer_lag.collect()[0].samples
    }


async def test_lag_is_published_per_partition_and_a_revoked_partition_disappears():
    metrics = RuntimeMetrics("test")
    now = [0.0]
    monitor = ConsumerHealthMonitor(metrics, stall_seconds=30, interval_seconds=1, monotonic=lambda: now[0])
    p0, p1 = TopicPartition("t", 0), TopicPartition("t", 1)
    p2 = TopicPartition("t", 2)
    kafka = FakeKafkaConsumer({p0: 10, p1: 4, p2: None}, {p0: 12, p1: 4, p2: 3})
    monitor.watch(FakeProgress("g"), lambda: kafka)

    await monitor.sample()
    assert lag_samples(metrics) == {("g", "t", "0"): 2, ("g", "t", "1"): 0, ("g", "t", "2"): 2}

    kafka.commits.pop(p1)
    await monitor.sample()
    assert lag_samples(metrics) == {("g", "t", "0"): 2, ("g", "t", "2"): 2}


async def test_monitor_reports_a_stuck_group_until_it_makes_progress():
    metrics = RuntimeMetrics("test")
    now = [100.0]
    monitor = ConsumerHealthMonitor(metrics, stall_seconds=30, interval_seconds=1, monotonic=lambda: now[0])
    progress = FakeProgress("g")
    tp = TopicPartition("t", 0)
    kafka = FakeKafkaConsumer({tp: 3}, {tp: 8})
    monitor.watch(progress, lambda: kafka)

    await monitor.sample()
    now[0] = 131.0
    await monitor.sample()
    assert set(monitor.stuck()) == {"g"}
    assert metrics.registry.get_sample_value("gridwhistle_test_consumer_stuck", {"group": "g"}) == 1

    progress.last_processed_at, kafka.commits[tp] = 132.0, 8
    now[0] = 133.0
    await monitor.sample()
    assert monitor.stuck() == {}
    assert metrics.registry.get_sample_value("gridwhistle_test_consumer_stuck", {"group": "g"}) == 0


async def test_a_consumer_not_started_yet_reports_no_lag():
    metrics = RuntimeMetrics("test")
    monitor = ConsumerHealthMonitor(metrics, stall_seconds=30, interval_seconds=1)
    monitor.watch(FakeProgress("g"), lambda: None)
    await monitor.sample()
    assert lag_samples(metrics) == {} and monitor.stuck() == {}
