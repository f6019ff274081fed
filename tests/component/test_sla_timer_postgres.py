"""On PostgreSQL, replicas of the SLA timer share one database and fire each deadline exactly once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from services.runtime.clock import FakeClock
from tests.component.test_sla_timer_harness import acknowledged, dispatched, new_ids, running, settings_for

pytestmark = pytest.mark.integration


def _pg_settings(url: str, **overrides):
    settings = settings_for("unused", **overrides)
    return settings.model_copy(update={"database_url": url})


async def test_two_replicas_firing_at_once_breach_each_deadline_exactly_once(pg_url):
    clock = FakeClock()
    handoffs = []
    settings = _pg_settings(pg_url, fire_batch_size=25)
    async with running(settings, clock) as one, running(settings, clock) as two:
        for _ in range(120):
            incident, handoff = new_ids()
            handoffs.append(handoff)
            await one.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
        clock.advance(timedelta(hours=1))
        fired = await asyncio.gather(one.fire_due(), two.fire_due(), one.fire_due(), two.fire_due())
        assert sum(fired) == len(handoffs)
        breaches = await one.emitted("DeadlineBreached")
        assert sorted(b.data.handoff_id for b in breaches) == sorted(handoffs)


async def test_pause_resume_and_ack_keep_running_time_on_postgresql(pg_url):
    clock = FakeClock()
    async with running(_pg_settings(pg_url), clock) as sla:
        incident, handoff = new_ids()
        await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
        row = await sla.deadline(handoff)
        body = {"actor_id": "cmd-D01-1", "reason": "flood"}
        assert (await sla.http.post(f"/api/v1/deadlines/{row['id']}/pause", json=body)).status_code == 200
        clock.advance(timedelta(hours=1))
        assert (await sla.http.post(f"/api/v1/deadlines/{row['id']}/resume", json={"actor_id": "cmd-D01-2"})).status_code == 200
        clock.advance(timedelta(minutes=8))
        assert await sla.fire_due() == 1  # the 50% warning, in running time
        clock.advance(timedelta(minutes=8))
        assert await sla.fire_due() == 1  # the breach
        assert len(await sla.emitted("DeadlineBreached")) == 1
        await sla.publish(acknowledged(incident, handoff, clock.now()), incident_id=incident)
        assert (await sla.deadline(handoff))["late_ack_at"] is not None
