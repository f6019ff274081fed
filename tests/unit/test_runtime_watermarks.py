"""The consumed view: per-partition watermarks from log end offsets and processed positions (fake Kafka)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiokafka import TopicPartition

from services.runtime.clock import FakeClock
from services.runtime.watermarks import ConsumedView

TOPIC = "gridwhistle.routing.handoffs"
P0, P1 = (TOPIC, 0), (TOPIC, 1)


@dataclass
class FakeKafka:
    """end_offsets and committed of an aiokafka consumer, with a switch to make the broker unreachable."""

    ends: dict[int, int] = field(default_factory=dict)
    committed_offsets: dict[int, int] = field(default_factory=dict)
    reachable: bool = True
    end_offset_calls: int = 0

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.end_offset_calls += 1
        if not self.reachable:
            raise ConnectionError("broker unreachable")
        return {tp: self.ends.get(tp.partition, 0) for tp in tps}

    async def committed(self, tp: TopicPartition) -> int | None:
        if not self.reachable:
            raise ConnectionError("broker unreachable")
        return self.committed_offsets.get(tp.partition)


@dataclass
class FakeConsumer:
    kafka: FakeKafka | None
    name: str = "group"
    positions: dict[tuple[str, int], int] = field(default_factory=dict)

    def kafka_consumer(self) -> Any:
        return self.kafka


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def view_over(consumer: FakeConsumer, clock: FakeClock, monotonic: Monotonic, forced: list[str] | None = None) -> ConsumedView:
    return ConsumedView(
        {TOPIC: consumer},
        clock,
        settle_seconds=3.0,
        hold_max_seconds=30.0,
        on_forced=(forced.append if forced is not None else None),
        monotonic=monotonic,
    )


async def test_a_partition_is_complete_up_to_the_observation_its_consumer_has_reached():
    clock, monotonic = FakeClock(), Monotonic()
    kafka = FakeKafka(ends={0: 10})
    consumer = FakeConsumer(kafka)
    view = view_over(consumer, clock, monotonic)
    asked_at = clock.now()

    assert (await view.watermarks({P0}, asked_at))[P0] is None  # 10 records in the log, none processed
    consumer.positions[P0] = 9
    assert (await view.watermarks({P0}, asked_at))[P0] is None  # one still waiting
    consumer.positions[P0] = 10
    assert (await view.watermarks({P0}, asked_at))[P0] == asked_at


async def test_an_observation_waiting_to_be_reached_is_not_repeated_and_later_records_do_not_move_the_goal():
    clock, monotonic = FakeClock(), Monotonic()
    kafka = FakeKafka(ends={0: 10})
    consumer = FakeConsumer(kafka)
    view = view_over(consumer, clock, monotonic)
    due = clock.now()
    await view.watermarks({P0}, due)
    kafka.ends[0] = 50  # more records appended after the due instant: they do not matter to it
    clock.advance(timedelta(milliseconds=50))
    consumer.positions[P0] = 10

    assert (await view.watermarks({P0}, due))[P0] == due
    assert kafka.end_offset_calls == 1


async def test_the_groups_committed_offset_counts_when_another_replica_owns_the_partition():
    clock, monotonic = FakeClock(), Monotonic()
    kafka = FakeKafka(ends={1: 7}, committed_offsets={1: 7})
    view = view_over(FakeConsumer(kafka), clock, monotonic)

    assert (await view.watermarks({P1}, clock.now()))[P1] == clock.now()


async def test_an_empty_partition_is_complete_at_once():
    clock, monotonic = FakeClock(), Monotonic()
    view = view_over(FakeConsumer(FakeKafka()), clock, monotonic)

    assert (await view.watermarks({P0}, clock.now()))[P0] == clock.now()


async def test_a_newer_due_instant_needs_a_newer_observation():
    clock, monotonic = FakeClock(), Monotonic()
    kafka = FakeKafka(ends={0: 3})
    consumer = FakeConsumer(kafka, positions={P0: 3})
    view = view_over(consumer, clock, monotonic)
    first = clock.now()
    assert (await view.watermarks({P0}, first))[P0] == first

    later = clock.advance(timedelta(seconds=1))
    kafka.ends[0] = 5  # an acknowledgement arrived meanwhile, not yet processed
    assert (await view.watermarks({P0}, later))[P0] == first
    consumer.positions[P0] = 5
    assert (await view.watermarks({P0}, later))[P0] == later


async def test_nothing_is_complete_while_the_broker_is_unreachable_and_after_it_returns_the_view_settles_first():
    clock, monotonic = FakeClock(), Monotonic()
    kafka = FakeKafka(ends={0: 0}, reachable=False)
    view = view_over(FakeConsumer(kafka), clock, monotonic)

    monotonic.now += 120  # however long the outage lasts, no hold limit runs out
    assert (await view.watermarks({P0}, clock.now()))[P0] is None
    kafka.reachable = True
    assert (await view.watermarks({P0}, clock.now()))[P0] is None  # back: others' outboxes drain first
    monotonic.now += 2.9
    assert (await view.watermarks({P0}, clock.now()))[P0] is None
    monotonic.now += 0.2
    assert (await view.watermarks({P0}, clock.now()))[P0] == clock.now()


async def test_a_consumer_stuck_behind_the_log_holds_deadlines_only_up_to_the_hold_limit():
    clock, monotonic = FakeClock(), Monotonic()
    kafka = FakeKafka(ends={0: 10})
    forced: list[str] = []
    view = view_over(FakeConsumer(kafka, positions={P0: 4}), clock, monotonic, forced)
    due = clock.now()

    assert (await view.watermarks({P0}, due))[P0] is None
    monotonic.now += 29.9
    assert (await view.watermarks({P0}, due))[P0] is None and forced == []
    monotonic.now += 0.2
    assert (await view.watermarks({P0}, due))[P0] == due
    assert forced == [TOPIC]


async def test_without_a_live_consumer_nothing_is_known():
    clock, monotonic = FakeClock(), Monotonic()
    view = view_over(FakeConsumer(None), clock, monotonic)

    assert (await view.watermarks({P0}, clock.now()))[P0] is None


async def test_a_lagging_consumer_reaches_an_early_observation_although_the_log_keeps_growing():
    clock, monotonic = FakeClock(), Monotonic()
    kafka = FakeKafka(ends={0: 100})
    consumer = FakeConsumer(kafka, positions={P0: 0})
    view = view_over(consumer, clock, monotonic)
    first = clock.now()
    for round_ in range(20):  # every round the log has grown and the consumer is still behind
        kafka.ends[0] += 10
        consumer.positions[P0] = 5 * round_
        assert (await view.watermarks({P0}, clock.now()))[P0] is None
        clock.advance(timedelta(milliseconds=50))
    assert kafka.end_offset_calls == ConsumedView.MAX_PENDING  # no more asked while that many wait

    consumer.positions[P0] = 110  # what the log held when first asked
    assert (await view.watermarks({P0}, clock.now()))[P0] == first
