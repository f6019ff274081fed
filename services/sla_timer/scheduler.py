"""The deadline scheduler: fires what is due, exactly once, never early, then sleeps until the next one.

Firing claims a batch of due armed rows (on PostgreSQL with FOR UPDATE SKIP LOCKED, so replicas
share the work without waiting on each other), marks each with a conditional UPDATE ... WHERE
state = 'armed' and stages its event in the outbox, all in one transaction. Whoever commits that
UPDATE first owns the firing; a crashed replica's claim dies with its transaction.

A row is claimed only once the partition its awaited fact arrives on has been processed up to
the row's fire instant (services.runtime.watermarks): an acknowledgement made in time but still
unconsumed (lag, a restart, a rebalance) cancels the deadline instead of being breached.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from contracts.deadline_policy import DeadlinePolicy
from services.runtime.host import ServiceRuntime
from services.runtime.logs import get_logger
from services.runtime.outbox import UnitOfWork
from services.runtime.watermarks import CompleteView, ConsumedView
from services.sla_timer import facts
from services.sla_timer import repository as repo
from services.sla_timer.domain import DeadlineState, next_fire_at, plan_firing, warning_instant
from services.sla_timer.metrics import SlaTimerMetrics
from services.sla_timer.settings import SlaTimerSettings

log = get_logger(__name__)

# When the earliest due row is locked by another replica, look again after this, not at once.
_CONTENDED_PAUSE_SECONDS = 0.05


class DeadlineScheduler:
    """Fires due deadlines and warnings; handlers tell it when a sooner deadline was armed."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        settings: SlaTimerSettings,
        policy: DeadlinePolicy,
        metrics: SlaTimerMetrics,
        view: ConsumedView | CompleteView | None = None,
    ) -> None:
        self._runtime = runtime
        self._view: ConsumedView | CompleteView = view or CompleteView()
        self._settings = settings
        self._fractions = policy.warning_fractions if settings.warnings_enabled else ()
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._sleeping_until: datetime | None = None
        self._armed_during_round: datetime | None = None

    @property
    def warning_fractions(self) -> tuple[float, ...]:
        """The fractions of a window at which warnings are sent (empty when disabled)."""
        return tuple(self._fractions)

    def use_view(self, view: ConsumedView | CompleteView) -> None:
        """Fire only what `view` says has been consumed up to its fire instant."""
        self._view = view

    def armed(self, fire_at: datetime) -> None:
        """A deadline now needs the scheduler at `fire_at`; wake it if it sleeps past that."""
        if self._sleeping_until is None:
            # Awake: the end of this round takes it into account. Waking on every arm would spin
            # the loop (and its queries) once per consumed dispatch under load.
            if self._armed_during_round is None or fire_at < self._armed_during_round:
                self._armed_during_round = fire_at
        elif fire_at < self._sleeping_until:
            self._wake.set()

    async def fire_due(self, now: datetime) -> int:
        """Fire every breach and warning due at `now`, batch by batch; return how many events were emitted."""
        emitted, _ = await self.fire_backlog(lambda: now)
        return emitted

    async def fire_backlog(self, instant: Callable[[], datetime]) -> tuple[int, datetime]:
        """Fire batch after batch, each what is due at `instant()` as it starts; return (events, last instant).

        The running loop reads the clock for every batch: what comes due while a backlog is being
        fired (a burst of ten thousand takes seconds) goes in the next batch, not after the round,
        and each breach is stamped with the instant its own batch fired, not the round's start.
        """
        emitted = 0
        while True:
            now = instant()
            watermarks, watched = await self._watermarks(now)
            claimed, sent = await self._fire_batch(now, watermarks, watched)
            emitted += sent
            # A full batch that emitted nothing made no progress; the next round looks again.
            if claimed < self._settings.fire_batch_size or sent == 0:
                return emitted, now

    async def _watermarks(self, now: datetime) -> tuple[dict[tuple[str, int], datetime | None], frozenset[str]]:
        """How far each source partition of the due rows has been consumed."""
        async with self._runtime.engine.connect() as conn:
            due = await repo.due_sources(conn, now)
            await conn.rollback()
        watched = self._view.topics
        wanted = {(t, p) for t, p in due if t in watched}
        marks = await self._view.watermarks(wanted, now) if wanted else {}
        self._metrics.held_partitions.set(sum(1 for mark in marks.values() if mark is None or mark < now))
        return marks, watched

    async def _fire_batch(
        self, now: datetime, watermarks: dict[tuple[str, int], datetime | None], watched: frozenset[str]
    ) -> tuple[int, int]:
        after_commit: list[Any] = []
        async with self._runtime.unit_of_work() as uow:
            rows = await repo.claim_due(uow.conn, now, self._settings.fire_batch_size, watermarks, watched)
            breaches = []
            for row in rows:
                mark = watermarks.get((row.source_topic, row.source_partition)) if row.source_topic in watched else None
                # What is due is judged at the instant up to which the awaited fact would have been
                # seen; the firing itself is stamped with the real time.
                as_seen = min(now, mark) if mark is not None else now
                plan = plan_firing(row.due_at, row.window_seconds, self._fractions, max(row.warnings_sent, default=0.0), as_seen)
                if plan.breach:
                    breaches.append(row)
                else:
                    await self._warn_one(uow, row, plan, now, after_commit)
            # One conditional UPDATE for every breach of the batch: still exactly once per deadline.
            fired = await repo.fire_many_if_armed(uow.conn, [row.id for row in breaches], at=now)
            fired_rows = [row for row in breaches if row.id in fired]
            await uow.emit(*(facts.breached(row, now=now) for row in fired_rows))
            after_commit.append(lambda: self.count_breaches(fired_rows, now))
            sent = len(uow.emitted)
        for record in after_commit:
            record()
        return len(rows), sent

    async def _warn_one(self, uow: UnitOfWork, row: Any, plan: Any, now: datetime, after_commit: list[Any]) -> None:
        if plan.warning_fraction is None:
            # Only reachable when warnings were disabled after rows were armed with warning instants.
            await repo.record_warning_if_armed(
                uow.conn,
                row.id,
                expected_next_fire_at=row.next_fire_at,
                warnings_sent=list(row.warnings_sent),
                next_warning_at=plan.next_warning_at,
                next_fire_at=next_fire_at(row.due_at, plan.next_warning_at),
            )
            return
        recorded = await repo.record_warning_if_armed(
            uow.conn,
            row.id,
            expected_next_fire_at=row.next_fire_at,
            warnings_sent=[*row.warnings_sent, plan.warning_fraction],
            next_warning_at=plan.next_warning_at,
            next_fire_at=next_fire_at(row.due_at, plan.next_warning_at),
        )
        if recorded:
            await uow.emit(facts.warned(row, plan.warning_fraction, now=now))
            late = max((now - warning_instant(row.due_at, row.window_seconds, plan.warning_fraction)).total_seconds(), 0.0)
            after_commit.append(lambda: self.count_warning(row, late))

    def count_warning(self, row: Any, lateness_seconds: float) -> None:
        """Count a committed warning and how late it was sent."""
        self._metrics.fired.labels(row.urgency, row.kind, "warning").inc()
        self._metrics.warning_lateness.labels(row.urgency).observe(lateness_seconds)

    def count_breach(self, row: Any, fired_at: datetime) -> None:
        """Count a committed breach and how late it fired."""
        self.count_breaches([row], fired_at)

    def count_breaches(self, rows: list[Any], fired_at: datetime) -> None:
        """Count committed breaches and how late each fired."""
        # One labels() lookup per label set, not per row: a burst fires thousands a second.
        for (urgency, kind), n in Counter((row.urgency, row.kind) for row in rows).items():
            self._metrics.breached.labels(urgency, kind).inc(n)
            self._metrics.fired.labels(urgency, kind, "breach").inc(n)
        lateness = {urgency: self._metrics.lateness.labels(urgency) for urgency in {row.urgency for row in rows}}
        for row in rows:
            lateness[row.urgency].observe(max((fired_at - row.due_at).total_seconds(), 0.0))

    async def refresh_pending_gauge(self) -> None:
        """Set the pending gauge from the database (what every replica agrees on)."""
        async with self._runtime.engine.connect() as conn:
            counts = await repo.count_open_by_urgency(conn)
            await conn.rollback()
        seen = {(state, urgency): n for state, urgency, n in counts}
        for state in (DeadlineState.ARMED.value, DeadlineState.PAUSED.value):
            for urgency in ("urgent", "general"):
                self._metrics.pending.labels(urgency, state).set(seen.get((state, urgency), 0))

    async def watch_pending(self) -> None:
        """Refresh the pending gauge every `pending_gauge_refresh_seconds`, until cancelled.

        A loop of its own, never a step of the firing loop: counting a million open rows takes
        hundreds of milliseconds, and every deadline due meanwhile would fire that much later.
        """
        while True:
            try:
                await self.refresh_pending_gauge()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database is down: the gauge keeps its last value
                log.debug("pending gauge not refreshed", error=repr(exc)[:200])
            await asyncio.sleep(self._settings.pending_gauge_refresh_seconds)

    async def run(self) -> None:
        """Fire due deadlines until cancelled; catches up on any backlog first."""
        clock = self._runtime.clock
        max_sleep = self._settings.scheduler_max_sleep_seconds
        while True:
            # Awake: any deadline armed from now on wakes the next sleep at once.
            self._sleeping_until = None
            self._armed_during_round = None
            self._wake.clear()
            _, fired_up_to = await self.fire_backlog(clock.now)
            async with self._runtime.engine.connect() as conn:
                upcoming = await repo.next_fire_instant(conn)
                await conn.rollback()
            if upcoming is None:
                delay = max_sleep
            elif upcoming <= fired_up_to:
                # Due, yet not fired by us: another replica holds it, or its partition's consumer
                # has not caught up with the due instant yet.
                delay = _CONTENDED_PAUSE_SECONDS
            else:
                delay = min(max_sleep, max((upcoming - clock.now()).total_seconds(), 0.0))
            if self._armed_during_round is not None:
                delay = min(delay, max((self._armed_during_round - clock.now()).total_seconds(), 0.0))
            self._sleeping_until = clock.now() + timedelta(seconds=delay)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass
