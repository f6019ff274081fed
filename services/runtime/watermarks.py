"""How far in time a consumer group's view of its topic is complete, per partition.

A service that acts on the *absence* of an event (the SLA timer breaching a deadline because no
acknowledgement came) must not act on a stale view: an acknowledgement already in Kafka but not
yet consumed (consumer lag, a restart, a rebalance) would otherwise be breached as missing.

For each partition the view keeps observations (log end offset E, instant T at or before which
the ListOffsets request was sent): once the group has processed every record below E, every
record appended before T has been taken into account, so the view is complete up to T. The
watermark of a partition is the newest such T. Observations are only made while the caller has
something due, so an idle service asks the broker nothing.

Two limits keep a broken consumer from silencing every breach:
- after the broker was unreachable, observations wait `settle_seconds`, so other services'
  outboxes (holding what they committed during the outage) are published before we look;
- a partition that stays behind an observation for `hold_max_seconds` while the broker answers
  is released anyway (logged and counted): a wedged consumer delays a breach, never drops it.
While the broker does not answer at all nothing is released: a breach could not be delivered
then anyway, and firing it into the outbox would only race the acknowledgements that are
waiting in other outboxes for the same broker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from aiokafka import TopicPartition

from services.runtime.clock import Clock
from services.runtime.logs import get_logger

log = get_logger(__name__)

Partition = tuple[str, int]


class PositionSource(Protocol):
    """What the view needs from an EventConsumer."""

    name: str
    positions: dict[Partition, int]
    kafka_consumer: Callable[[], Any]


@dataclass
class _Observation:
    end_offset: int
    observed_at: datetime  # the ListOffsets request was sent at or after this instant
    made_at: float  # monotonic, for the hold limit


@dataclass
class _PartitionView:
    complete_until: datetime | None = None
    pending: list[_Observation] = field(default_factory=list)  # oldest first


class ConsumedView:
    """Per-partition watermarks of what one service's consumer groups have processed."""

    # Observations waiting to be reached, per partition.
    MAX_PENDING = 8

    def __init__(
        self,
        consumers: Mapping[str, PositionSource],
        clock: Clock,
        *,
        settle_seconds: float = 3.0,
        hold_max_seconds: float = 30.0,
        timeout_seconds: float = 2.0,
        on_forced: Callable[[str], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._consumers = dict(consumers)
        self._clock = clock
        self._settle = settle_seconds
        self._hold_max = hold_max_seconds
        self._timeout = timeout_seconds
        self._on_forced = on_forced or (lambda topic: None)
        self._monotonic = monotonic
        self._views: dict[Partition, _PartitionView] = {}
        self._unreachable = False
        self._observe_not_before = float("-inf")

    @property
    def topics(self) -> frozenset[str]:
        """The topics consumed here, whose partitions have watermarks."""
        return frozenset(self._consumers)

    async def watermarks(self, partitions: Iterable[Partition], as_of: datetime) -> dict[Partition, datetime | None]:
        """For each partition, the instant up to which its view is complete (None: not known yet).

        A partition whose view is behind `as_of` gets a new observation, unless one already
        waiting to be reached covers `as_of`, or too many are waiting (the consumer must first
        reach those: dropping them would let a lagging consumer chase the log end forever).
        """
        result: dict[Partition, datetime | None] = {}
        by_topic: dict[str, list[Partition]] = {}
        for partition in partitions:
            by_topic.setdefault(partition[0], []).append(partition)
        for topic, members in by_topic.items():
            consumer = self._consumers.get(topic)
            if consumer is None:
                raise KeyError(f"no consumer of {topic} in this service")
            await self._refresh(consumer, topic, members, as_of)
            for partition in members:
                result[partition] = self._views[partition].complete_until
        return result

    async def _refresh(self, consumer: PositionSource, topic: str, partitions: list[Partition], as_of: datetime) -> None:
        kafka = consumer.kafka_consumer()
        views = {p: self._views.setdefault(p, _PartitionView()) for p in partitions}
        to_observe = [p for p in partitions if self._needs_observation(views[p], as_of)]
        if to_observe and kafka is not None and self._monotonic() >= self._observe_not_before:
            await self._observe(kafka, topic, to_observe, views)
        for partition in partitions:
            view = views[partition]
            if not view.pending:
                continue
            position = consumer.positions.get(partition, 0)
            if position < view.pending[0].end_offset and kafka is not None:
                position = max(position, await self._committed(kafka, partition))
            self._advance(view, position)
            self._release_if_held_too_long(view, consumer.name, partition)

    def _needs_observation(self, view: _PartitionView, as_of: datetime) -> bool:
        if view.complete_until is not None and view.complete_until >= as_of:
            return False
        if view.pending and (view.pending[-1].observed_at >= as_of or len(view.pending) >= self.MAX_PENDING):
            return False
        return True

    async def _observe(self, kafka: Any, topic: str, partitions: list[Partition], views: dict[Partition, _PartitionView]) -> None:
        sent_at = self._clock.now()
        try:
            ends = await asyncio.wait_for(
                kafka.end_offsets([TopicPartition(topic, p) for _, p in partitions]), timeout=self._timeout
            )
        except Exception as exc:  # noqa: BLE001 - an unreachable broker means "not known", never "complete"
            if not self._unreachable:
                log.warning("log end offsets unavailable; holding deadlines on this view", topic=topic, error=repr(exc)[:200])
            self._unreachable = True
            return
        if self._unreachable:
            # Back after an outage: give the other services' relays time to publish what they
            # committed meanwhile, then look again.
            self._unreachable = False
            self._observe_not_before = self._monotonic() + self._settle
            log.info("broker reachable again; settling before trusting the view", topic=topic, settle_seconds=self._settle)
            return
        made_at = self._monotonic()
        for tp, end in ends.items():
            views[(tp.topic, tp.partition)].pending.append(_Observation(end, sent_at, made_at))

    async def _committed(self, kafka: Any, partition: Partition) -> int:
        # Another replica may own the partition: the group's committed offset is what it finished.
        try:
            committed = await asyncio.wait_for(kafka.committed(TopicPartition(*partition)), timeout=self._timeout)
        except Exception:  # noqa: BLE001 - unknown counts as not processed
            return 0
        return committed or 0

    @staticmethod
    def _advance(view: _PartitionView, position: int) -> None:
        while view.pending and view.pending[0].end_offset <= position:
            reached = view.pending.pop(0)
            if view.complete_until is None or reached.observed_at > view.complete_until:
                view.complete_until = reached.observed_at

    def _release_if_held_too_long(self, view: _PartitionView, group: str, partition: Partition) -> None:
        if not view.pending or self._monotonic() - view.pending[0].made_at < self._hold_max:
            return
        # The broker answers but the group has not reached what the log held: a wedged handler or
        # a lost assignment. A late breach is better than none.
        oldest = view.pending.pop(0)
        view.complete_until = max(oldest.observed_at, view.complete_until or oldest.observed_at)
        log.error(
            "consumer behind the log for too long; firing on an incomplete view",
            group=group,
            topic=partition[0],
            partition=partition[1],
            hold_max_seconds=self._hold_max,
        )
        self._on_forced(partition[0])


class CompleteView:
    """A view that is always complete: for the in-memory broker, where a publish runs its handler."""

    topics: frozenset[str] = frozenset()  # nothing is held back

    async def watermarks(self, partitions: Iterable[Partition], as_of: datetime) -> dict[Partition, datetime | None]:
        """Every partition is complete up to `as_of`."""
        return dict.fromkeys(partitions, as_of)

