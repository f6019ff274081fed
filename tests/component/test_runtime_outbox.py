"""The outbox relay: nothing published before commit, everything committed published, in order."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import MetaData, select

from services.runtime.clock import FakeClock
from services.runtime.db import add_runtime_tables, create_engine, create_schema
from services.runtime.metrics import RuntimeMetrics
from services.runtime.outbox import OutboxRelay, UnitOfWork
from tests.support import reported

metadata = MetaData()
tables = add_runtime_tables(metadata)


@pytest.fixture
async def engine(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/outbox.db")
    await create_schema(engine, metadata)
    yield engine
    await engine.dispose()


class Broker:
    def __init__(self, fail_times: int = 0) -> None:
        self.sent: list[tuple[str, bytes, bytes, dict]] = []
        self.fail_times = fail_times

    async def publish(self, topic, key, value, headers):
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("broker unreachable")
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        self.sent.append((topic, key, value, headers))
        return fut


def relay_for(engine, broker, clock=None, batch=500) -> OutboxRelay:
    return OutboxRelay(engine, tables[0], broker.publish, clock or FakeClock(), RuntimeMetrics("t"), batch_size=batch)


async def test_rolled_back_transaction_publishes_nothing(engine):
    broker = Broker()
    with pytest.raises(RuntimeError):
        async with UnitOfWork(engine, tables, FakeClock()) as uow:
            await uow.emit(reported())
            raise RuntimeError("state change failed")
    assert await relay_for(engine, broker).drain_once() == 0
    assert broker.sent == []


async def test_committed_events_are_published_in_order_with_key_and_headers_once(engine):
    broker = Broker()
    envelopes = [reported(incident_id=f"00000000-0000-0000-0000-00000000000{i}") for i in range(5)]
    async with UnitOfWork(engine, tables, FakeClock(), topic_prefix="p.") as uow:
        await uow.emit(*envelopes)
    relay = relay_for(engine, broker, batch=2)
    assert [await relay.drain_once() for _ in range(4)] == [2, 2, 1, 0]
    assert [v for _, _, v, _ in broker.sent] == [e.encode() for e in envelopes]
    topic, key, _, headers = broker.sent[0]
    assert topic == "p.gridwhistle.intake.incidents"
    assert key == envelopes[0].subject.encode()
    assert headers["gw-type"] == "IncidentReported" and headers["gw-id"] == str(envelopes[0].id)


async def test_broker_outage_keeps_rows_until_published(engine):
    broker = Broker(fail_times=2)
    async with UnitOfWork(engine, tables, FakeClock()) as uow:
        await uow.emit(reported())
    relay = relay_for(engine, broker)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await relay.drain_once()
    assert await relay.drain_once() == 1
    assert len(broker.sent) == 1
    async with engine.connect() as conn:
        pending = (await conn.execute(select(tables[0]).where(tables[0].c.published_at.is_(None)))).all()
    assert pending == []


async def test_commit_wakes_the_running_relay(engine):
    broker = Broker()
    relay = OutboxRelay(engine, tables[0], broker.publish, FakeClock(), RuntimeMetrics("t"), poll_seconds=30)
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0.05)
    async with UnitOfWork(engine, tables, FakeClock(), on_commit=relay.notify) as uow:
        await uow.emit(reported())
    for _ in range(100):
        if broker.sent:
            break
        await asyncio.sleep(0.01)
    await relay.stop()
    await asyncio.wait_for(task, 5)
    assert len(broker.sent) == 1  # woken by the commit, not by the 30 s poll
