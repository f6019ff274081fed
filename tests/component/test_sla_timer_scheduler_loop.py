"""The scheduler's running loop: the clock is read for every batch, and counting never delays firing."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from services.runtime.clock import FakeClock
from services.sla_timer import repository
from tests.component.test_sla_timer_harness import MS, dispatched, eventually, new_ids, running, settings_for


async def test_what_comes_due_while_a_backlog_fires_goes_in_the_next_batch_stamped_with_its_own_instant(tmp_path):
    clock = FakeClock()
    start = clock.now()
    async with running(settings_for(tmp_path / "sla.db", fire_batch_size=1, warnings_enabled=False), clock) as sla:
        dues = [start + timedelta(minutes=15) + i * MS for i in range(3)]
        handoffs = []
        for due in dues:
            incident, handoff = new_ids()
            handoffs.append(handoff)
            await sla.publish(dispatched(incident, handoff, start, report_due_at=due), incident_id=incident)
        # Each batch (of one) reads the next instant: the first row is due at the first, the second
        # only at the second, and so on; the fourth read finds nothing due and ends the round.
        instants = iter([*dues, dues[-1] + MS])
        emitted, last = await sla.app.state.scheduler.fire_backlog(lambda: next(instants))
        breaches = {e.data.handoff_id: e.data.fired_at for e in await sla.emitted("DeadlineBreached")}

    assert emitted == 3
    assert last == dues[-1] + MS
    assert [breaches[h] for h in handoffs] == dues  # never before its due instant, and not the round's start


async def test_a_pending_count_that_never_returns_does_not_hold_back_a_breach(tmp_path, monkeypatch):
    # Counting a million open deadlines takes hundreds of milliseconds; here it never ends at all.
    never = asyncio.Event()

    async def stuck_count(conn):
        await never.wait()

    monkeypatch.setattr(repository, "count_open_by_urgency", stuck_count)
    clock = FakeClock()
    settings = settings_for(
        tmp_path / "sla.db", scheduler_enabled=True, scheduler_max_sleep_seconds=0.05, pending_gauge_refresh_seconds=0.01
    )
    async with running(settings, clock) as sla:
        incident, handoff = new_ids()
        await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
        clock.advance(timedelta(minutes=16))

        async def breached() -> bool:
            return bool(await sla.emitted("DeadlineBreached"))

        await eventually(breached, timeout=10)
