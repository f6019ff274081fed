"""Committing a consumer group's offsets in bulk, never past a record whose effects did not commit.

Committing after every record costs a broker round trip per record, which is most of a
service's consuming time on a small machine. It is not needed for correctness: the idempotent
consumer records every event id in the same transaction as its effects, so a record redelivered
after a crash or a rebalance ends as a duplicate. So offsets are committed after every
`every_records` records, at least every `interval_seconds` while records were processed, and on
shutdown. What is committed is the consumer's own processed positions (advanced only after a
record's transaction committed), never the client's fetch position, so a commit racing the
record in flight cannot skip it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from services.runtime.logs import get_logger

log = get_logger(__name__)


class OffsetCommitter:
    """Commits the processed positions of one consumer group to Kafka, in bulk."""

    def __init__(
        self,
        kafka_consumer: Callable[[], Any],
        positions: dict[tuple[str, int], int],
        *,
        every_records: int = 100,
        interval_seconds: float = 0.2,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kafka = kafka_consumer
        self._positions = positions
        self._every = every_records
        self._interval = interval_seconds
        self._monotonic = monotonic
        self._committed: dict[tuple[str, int], int] = {}
        self._since_commit = 0
        self._last_commit = monotonic()
        self._lock = asyncio.Lock()

    async def records_done(self, n: int = 1) -> None:
        """Count finished records; commit when enough records or time went by."""
        self._since_commit += n
        if self._since_commit >= self._every or self._monotonic() - self._last_commit >= self._interval:
            await self.commit()

    async def commit(self) -> None:
        """Commit every processed position not committed yet, for the partitions still assigned."""
        async with self._lock:
            kafka = self._kafka()
            if kafka is None:
                return
            assigned = kafka.assignment()
            pending = {
                TopicPartition(topic, partition): OffsetAndMetadata(offset, "")
                for (topic, partition), offset in list(self._positions.items())
                if offset > self._committed.get((topic, partition), -1) and TopicPartition(topic, partition) in assigned
            }
            self._since_commit = 0
            self._last_commit = self._monotonic()
            if not pending:
                return
            try:
                await kafka.commit(pending)
            except Exception as exc:  # noqa: BLE001 - a failed commit only means redelivery, deduped
                log.warning("offset commit failed; the records will be redelivered and deduplicated", error=repr(exc)[:200])
                return
            for tp, meta in pending.items():
                self._committed[(tp.topic, tp.partition)] = meta.offset

    async def run(self) -> None:
        """Commit what the last records left uncommitted, every interval, until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            if self._since_commit:
                await self.commit()
