"""Crashes at the two dangerous instants: between arming and commit, and between firing and publishing.

The first is driven through the service's own idempotent consumer (a failure at the end of the
consuming transaction, then the redelivery Kafka would make); the second stops the app while its
outbox relay cannot reach the broker, then starts a fresh app on the same database file.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from faststream.kafka.annotations import KafkaMessage
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from contracts.envelope import correlation_for, make_envelope
from contracts.events import CATALOGUE
from contracts.topics import SLA_DEADLINES
from services.runtime.clock import FakeClock
from services.runtime.consumer import Record
from services.runtime.outbox import UnitOfWork
from tests.component.test_sla_timer_harness import (
    acknowledged,
    dispatched,
    eventually,
    new_ids,
    running,
    settings_for,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _record(envelope) -> Record:
    return Record("gridwhistle.routing.handoffs", 0, 0, envelope.key(), envelope.encode(), envelope.headers())


async def test_a_crash_between_arming_and_commit_rolls_back_and_the_redelivery_arms_once(tmp_path, clock, monkeypatch):
    settings = settings_for(tmp_path / "sla.db", infra_retry_backoff_seconds=0.01)
    async with running(settings, clock) as sla:
        incident, handoff = new_ids()
        envelope = make_envelope(
            dispatched(incident, handoff, clock.now()), source="test", subject=incident,
            occurred_at=clock.now(), correlation_id=correlation_for(incident),
        )
        consumer = next(c for c in sla.runtime.consumers if c.name.endswith("handoffs"))
        real_emit = UnitOfWork.emit
        crashes = []

        async def emit_then_lose_the_connection(self, *envelopes):
            await real_emit(self, *envelopes)
            if not crashes:  # the deadline row and DeadlineArmed are staged; the commit never happens
                crashes.append(envelopes)
                raise OperationalError("COMMIT", {}, ConnectionError("server closed the connection"))

        monkeypatch.setattr(UnitOfWork, "emit", emit_then_lose_the_connection)
        with pytest.raises(OperationalError):
            await consumer.process(_record(envelope))  # nacked: Kafka redelivers it
        assert crashes and await sla.deadline(handoff) is None and await sla.emitted() == []

        assert await consumer.process(_record(envelope)) == "processed"
        assert await consumer.process(_record(envelope)) == "duplicate"
        assert (await sla.deadline(handoff))["state"] == "armed"
        assert [e.data.handoff_id for e in await sla.emitted("DeadlineArmed")] == [handoff]


async def test_a_crash_after_firing_but_before_publishing_publishes_the_breach_once_after_restart(tmp_path, clock):
    database = tmp_path / "sla.db"
    incident, handoff = new_ids()
    async with running(settings_for(database), clock) as first:
        await first.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
        await eventually(lambda: _published_all(first))  # DeadlineArmed is out; only the breach is at stake

        async def broker_unreachable(*_args):
            raise ConnectionError("broker unreachable")

        first.runtime.relay._publish = broker_unreachable  # noqa: SLF001 - the crash window under test
        clock.advance(timedelta(minutes=20))
        assert await first.fire_due() == 1  # the row is fired and the breach committed to the outbox
        outbox = first.runtime.tables[0]
        async with first.runtime.engine.connect() as conn:
            pending = (await conn.execute(select(outbox.c.payload).where(outbox.c.published_at.is_(None)))).all()
        assert [CATALOGUE.decode(bytes(p.payload)).type for p in pending] == ["DeadlineBreached"]

    # The process is gone; a new one starts on the same database and the same broker.
    received: list = []
    async with running(settings_for(database), clock) as second:
        broker = second.runtime.broker

        @broker.subscriber(second.runtime.topic(SLA_DEADLINES), group_id="probe")
        async def probe(msg: KafkaMessage) -> None:
            received.append(CATALOGUE.decode(msg.body))

        await broker.start()
        second.runtime.relay.notify()

        async def breach_published() -> bool:
            return any(e.type == "DeadlineBreached" for e in received)

        await eventually(breach_published)
        assert await second.fire_due() == 0  # the scheduler does not fire it again
        await second.publish(acknowledged(incident, handoff, clock.now()), incident_id=incident)
        assert await second.fire_due() == 0
        await eventually(lambda: _published_all(second))
        breaches = [e for e in received if e.type == "DeadlineBreached"]
        assert [b.data.handoff_id for b in breaches] == [handoff]


async def _published_all(sla) -> bool:
    outbox = sla.runtime.tables[0]
    async with sla.runtime.engine.connect() as conn:
        return not (await conn.execute(select(outbox.c.id).where(outbox.c.published_at.is_(None)))).first()
