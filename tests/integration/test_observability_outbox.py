"""The outbox backlog gauges keep moving while the broker is unreachable: that is when they matter."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaConnectionError
from sqlalchemy import MetaData

from services.runtime.clock import FakeClock
from services.runtime.db import add_runtime_tables, create_engine, create_schema
from services.runtime.metrics import RuntimeMetrics
from services.runtime.outbox import OutboxRelay, UnitOfWork
from tests.support import reported, wait_for

pytestmark = pytest.mark.integration

metadata = MetaData()
tables = add_runtime_tables(metadata)


class FlakyBroker:
    """A publish that fails like an unreachable broker until `reachable` is set."""

    def __init__(self) -> None:
        self.reachable = False
        self.attempts = 0
        self.sent: list[bytes] = []

    async def publish(self, topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        self.attempts += 1
        if not self.reachable:
            raise KafkaConnectionError("broker unreachable")
        self.sent.append(value)


def gauge(metrics: RuntimeMetrics, noun: str) -> float:
    value = metrics.registry.get_sample_value(f"gridwhistle_t_{noun}")
    assert value is not None
    return value


@pytest.fixture
async def engine(pg_url):
    engine = create_engine(pg_url)
    await create_schema(engine, metadata)
    yield engine
    await engine.dispose()


async def test_oldest_age_gauge_grows_while_publishing_fails_and_drops_to_zero_once_published(engine):
    clock = FakeClock()
    broker = FlakyBroker()
    metrics = RuntimeMetrics("t")
    relay = OutboxRelay(
        engine, tables[0], broker.publish, clock, metrics, poll_seconds=0.05, backlog_refresh_seconds=0.05
    )
    async with UnitOfWork(engine, tables, clock) as uow:
        await uow.emit(reported(), reported())
    task = asyncio.create_task(relay.run())
    try:
        clock.advance(20)
        await until(lambda: gauge(metrics, "outbox_backlog_events") == 2, timeout=10)
        await until(lambda: gauge(metrics, "outbox_oldest_age_seconds") == 20, timeout=10)
        # The gauges have their own loop, so they may be current before the first publish fails.
        await until(lambda: relay.healthy is False, timeout=10)
        assert gauge(metrics, "outbox_relay_failures_total") >= 1

        # Still failing, a minute and a half later: the age keeps rising past the alert's 60 s.
        clock.advance(70)
        relay.notify()
        await until(lambda: gauge(metrics, "outbox_oldest_age_seconds") == 90, timeout=10)
        assert gauge(metrics, "outbox_backlog_events") == 2 and broker.sent == []

        broker.reachable = True
        relay.notify()
        await until(lambda: gauge(metrics, "outbox_backlog_events") == 0, timeout=10)
        assert gauge(metrics, "outbox_oldest_age_seconds") == 0 and len(broker.sent) == 2
        assert relay.healthy is True
    finally:
        await relay.stop()
        await asyncio.wait_for(task, 10)


async def test_the_relay_survives_a_database_outage_with_its_last_gauge_values(pg_url, postgres_server):
    engine = create_engine(pg_url)
    await create_schema(engine, metadata)
    clock = FakeClock()
    broker = FlakyBroker()
    metrics = RuntimeMetrics("t")
    relay = OutboxRelay(
        engine, tables[0], broker.publish, clock, metrics, poll_seconds=0.05, backlog_refresh_seconds=0.05
    )
    async with UnitOfWork(engine, tables, clock) as uow:
        await uow.emit(reported())
    task = asyncio.create_task(relay.run())
    try:
        clock.advance(30)
        await until(lambda: gauge(metrics, "outbox_oldest_age_seconds") == 30, timeout=10)
        await engine.dispose()
        await asyncio.to_thread(postgres_server.drop_database, pg_url.rsplit("/", 1)[1])
        failures = gauge(metrics, "outbox_relay_failures_total")
        clock.advance(30)
        relay.notify()
        await until(lambda: gauge(metrics, "outbox_relay_failures_total") > failures + 1, timeout=20)
        assert not task.done()
        assert gauge(metrics, "outbox_oldest_age_seconds") == 30  # the last value read, not a made-up one
    finally:
        await relay.stop()
        await asyncio.wait_for(task, 20)
        await engine.dispose()


async def until(predicate, timeout: float) -> None:
    """Wait until a synchronous predicate on the gauges holds."""

    async def check() -> bool:
        return predicate()

    await wait_for(check, timeout=timeout)
