"""Transactional outbox: the unit of work that writes state + events atomically, and the relay.

Invariant: an event exists in Kafka only if the state change that produced it committed, and
every committed event reaches Kafka at least once (consumers dedupe by event id, so the effect
is once). The relay publishes rows in id order keyed by incident id, so one incident's events
keep their order; on PostgreSQL a session advisory lock elects one relay per database among
replicas, so two replicas never interleave and reorder an incident's events.
"""

from __future__ import annotations

import asyncio
import inspect
import zlib
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts.envelope import Envelope
from contracts.topics import topic_for_event
from services.runtime.clock import Clock
from services.runtime.db import among, insert_ignoring_conflicts
from services.runtime.logs import get_logger
from services.runtime.metrics import RuntimeMetrics

log = get_logger(__name__)

# publish(topic, key, value, headers) -> an awaitable that resolves once the broker acknowledged.
Publish = Callable[[str, bytes, bytes, dict[str, str]], Awaitable[Any]]


class UnitOfWork:
    """One database transaction: state, outbox rows and the processed-event record commit together."""

    def __init__(
        self,
        engine: AsyncEngine,
        tables: tuple[Any, Any],
        clock: Clock,
        topic_prefix: str = "",
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self._outbox, self._processed = tables
        self._clock = clock
        self._prefix = topic_prefix
        self._on_commit = on_commit
        self._cm: Any = None
        self.conn: AsyncConnection
        # What the current step (one consumed record, or the whole transaction) emitted. The outbox
        # rows are written from these lists in one statement just before the commit, so a caller
        # that undoes a step (a rolled-back savepoint) removes what it emitted from the list.
        self.emitted: list[Envelope] = []
        self._emitted_before: list[Envelope] = []
        self._after_commit: list[Callable[[], None]] = []
        # (topic, partition) of the record being consumed in this transaction; None for HTTP commands.
        self.source: tuple[str, int] | None = None

    async def __aenter__(self) -> UnitOfWork:
        self._cm = self._engine.begin()
        self.conn = await self._cm.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self.all_emitted:
            try:
                await self.conn.execute(self._outbox.insert(), self._rows(self.all_emitted))
            except BaseException as failure:
                await self._cm.__aexit__(type(failure), failure, failure.__traceback__)
                raise
        await self._cm.__aexit__(exc_type, exc, tb)
        if exc_type is None and self.all_emitted and self._on_commit:
            self._on_commit()
        if exc_type is None:
            for callback in self._after_commit:
                callback()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once this transaction has committed; never if it rolls back."""
        self._after_commit.append(callback)

    @property
    def all_emitted(self) -> list[Envelope]:
        """Every event this transaction emitted, across its steps."""
        return [*self._emitted_before, *self.emitted]

    def next_step(self) -> None:
        """Start the next record of a batch: `emitted` then lists only what that record emits."""
        self._emitted_before.extend(self.emitted)
        self.emitted = []

    async def claim_many(self, consumer: str, event_ids: list[str]) -> set[str]:
        """Record that `consumer` processed these events in one statement; return the ids new to it."""
        if not event_ids:
            return set()
        now = self._clock.now()
        stmt = insert_ignoring_conflicts(self.conn, self._processed).returning(self._processed.c.event_id)
        rows = [{"consumer": consumer, "event_id": event_id, "processed_at": now} for event_id in dict.fromkeys(event_ids)]
        result = await self.conn.execute(stmt, rows)
        return {row.event_id for row in result}

    async def claim(self, consumer: str, event_id: str) -> bool:
        """Record that `consumer` processed `event_id`; False means it already did (a duplicate)."""
        stmt = insert_ignoring_conflicts(self.conn, self._processed).values(
            consumer=consumer, event_id=event_id, processed_at=self._clock.now()
        )
        result = await self.conn.execute(stmt)
        return result.rowcount == 1

    async def emit(self, *envelopes: Envelope) -> None:
        """Stage events in the outbox; they are published only after this transaction commits."""
        self.emitted.extend(envelopes)

    def _rows(self, envelopes: list[Envelope]) -> list[dict[str, Any]]:
        now = self._clock.now()
        return [
            {
                "event_id": str(env.id),
                "event_type": env.type,
                "topic": self._prefix + topic_for_event(env.type).name,
                "key": env.subject,
                "payload": env.encode(),
                "headers": env.headers(),
                "created_at": now,
            }
            for env in envelopes
        ]


class OutboxRelay:
    """Publishes committed outbox rows to Kafka with acks=all, then marks them published."""

    def __init__(
        self,
        engine: AsyncEngine,
        outbox: Any,
        publish: Publish,
        clock: Clock,
        metrics: RuntimeMetrics,
        *,
        batch_size: int = 500,
        poll_seconds: float = 0.5,
        publish_timeout: float = 30.0,
        backlog_refresh_seconds: float = 1.0,
        lock_name: str = "gridwhistle-outbox",
    ) -> None:
        self._engine = engine
        self._outbox = outbox
        self._publish = publish
        self._clock = clock
        self._metrics = metrics
        self._batch = batch_size
        self._poll = poll_seconds
        self._publish_timeout = publish_timeout
        self._backlog_refresh = backlog_refresh_seconds
        self._lock_key = zlib.crc32(lock_name.encode())
        self._wake = asyncio.Event()
        self._stopping = False
        self._leader_conn: AsyncConnection | None = None
        self.healthy = True

    def notify(self) -> None:
        """Wake the relay: a transaction just committed new rows."""
        self._wake.set()

    async def stop(self) -> None:
        """Ask the loop to finish its current round, then release leadership."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Publish until stopped; on failure back off and retry, never dropping a row."""
        backoff = 0.1
        # The gauges have their own loop: a broker outage (failing or hanging publishes) is exactly
        # when the backlog grows, and the OutboxBacklogStale alert needs the oldest age to keep
        # rising while the database still answers. Standbys read the same table, so they agree.
        gauges = asyncio.create_task(self._watch_backlog(), name="outbox-backlog-gauges")
        try:
            while not self._stopping:
                try:
                    if not await self._is_leader():
                        await self._sleep(self._poll * 4)
                        continue
                    sent = await self.drain_once()
                    self.healthy = True
                    backoff = 0.1
                    if sent >= self._batch:
                        continue
                    await self._sleep(self._poll)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the relay must outlive any single failure
                    self.healthy = False
                    self._metrics.relay_failures.inc()
                    log.warning("outbox relay round failed", error=repr(exc)[:300], retry_in=backoff)
                    await self._release_leadership()
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            gauges.cancel()
            await asyncio.gather(gauges, return_exceptions=True)
            await self._release_leadership()

    async def drain_once(self) -> int:
        """Publish one batch of pending rows in id order; return how many were published."""
        async with self._engine.begin() as conn:
            rows = (
                await conn.execute(
                    select(
                        self._outbox.c.id,
                        self._outbox.c.topic,
                        self._outbox.c.key,
                        self._outbox.c.payload,
                        self._outbox.c.headers,
                    )
                    .where(self._outbox.c.published_at.is_(None))
                    .order_by(self._outbox.c.id)
                    .limit(self._batch)
                )
            ).all()
        if not rows:
            return 0
        # Publishing happens outside any transaction so a slow broker never holds a DB lock.
        pending = []
        for row in rows:
            result = self._publish(row.topic, row.key.encode(), bytes(row.payload), dict(row.headers))
            pending.append(await result if inspect.isawaitable(result) else result)
        acks = [p for p in pending if inspect.isawaitable(p)]
        if acks:
            await asyncio.wait_for(asyncio.gather(*acks), timeout=self._publish_timeout)
        now = self._clock.now()
        async with self._engine.begin() as conn:
            await conn.execute(
                update(self._outbox).where(among(conn, self._outbox.c.id, [r.id for r in rows])).values(published_at=now)
            )
        for row in rows:
            self._metrics.published.labels(row.topic).inc()
        return len(rows)

    async def update_backlog_metrics(self) -> None:
        """Refresh the backlog gauges (cheap: the pending rows have a partial index)."""
        async with self._engine.connect() as conn:
            count, oldest = (
                await conn.execute(
                    select(func.count(), func.min(self._outbox.c.created_at)).where(
                        self._outbox.c.published_at.is_(None)
                    )
                )
            ).one()
            await conn.rollback()
        self._metrics.outbox_backlog.set(count or 0)
        age = (self._clock.now() - oldest).total_seconds() if oldest else 0.0
        self._metrics.outbox_oldest_age.set(max(age, 0.0))

    async def _watch_backlog(self) -> None:
        """Refresh the backlog gauges every few moments, whatever the publishing loop is doing."""
        while True:
            try:
                await asyncio.wait_for(self.update_backlog_metrics(), timeout=max(self._backlog_refresh, 5.0))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database is down too: the gauges keep their last value
                log.debug("outbox backlog gauges not refreshed", error=repr(exc)[:200])
            await asyncio.sleep(self._backlog_refresh)

    async def _is_leader(self) -> bool:
        if self._engine.dialect.name != "postgresql":
            return True
        if self._leader_conn is not None:
            # A dead session has lost its lock to another replica: prove ours is still alive.
            await self._leader_conn.execute(text("SELECT 1"))
            await self._leader_conn.commit()
            return True
        conn = await self._engine.connect()
        got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._lock_key})).scalar()
        await conn.commit()
        if got:
            self._leader_conn = conn
            return True
        await conn.close()
        return False

    async def _release_leadership(self) -> None:
        conn, self._leader_conn = self._leader_conn, None
        if conn is not None:
            try:
                await conn.close()  # closing the session releases the advisory lock
            except Exception:  # noqa: BLE001 - the connection may already be dead
                await conn.invalidate()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except TimeoutError:
            pass
        self._wake.clear()

