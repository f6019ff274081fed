"""The idempotent consumer: duplicates, poison records, bounded retries, infrastructure failures."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.exc import OperationalError

from contracts.envelope import Envelope, PoisonMessage
from services.runtime.clock import FakeClock
from services.runtime.consumer import HEADER_DLQ_REASON, EventConsumer, Record
from services.runtime.db import add_runtime_tables, create_engine, create_schema
from services.runtime.metrics import RuntimeMetrics
from services.runtime.outbox import UnitOfWork
from tests.support import reported

metadata = MetaData()
effects = Table("effects", metadata, Column("id", Integer, primary_key=True), Column("incident_id", String(64)))
tables = add_runtime_tables(metadata)


@pytest.fixture
async def engine(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/consumer.db")
    await create_schema(engine, metadata)
    yield engine
    await engine.dispose()


class DeadLetters:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None, dict[str, str]]] = []

    async def __call__(self, topic, key, value, headers):
        self.records.append((topic, key, value, headers))


def make_consumer(engine, handler, dead_letters, attempts=3) -> EventConsumer:
    clock = FakeClock()
    return EventConsumer(
        name="test.group",
        dead_letter_topic="topic.dlq",
        handlers={"IncidentReported": handler},
        unit_of_work=lambda: UnitOfWork(engine, tables, clock),
        publish_dead_letter=dead_letters,
        metrics=RuntimeMetrics("test"),
        max_attempts=attempts,
        infra_backoff_seconds=0,
    )


def record(value: bytes | None, offset: int = 0) -> Record:
    return Record(topic="topic", partition=0, offset=offset, key=b"k", value=value, headers={"h": "1"})


async def write_effect(uow: UnitOfWork, envelope: Envelope) -> None:
    await uow.conn.execute(effects.insert().values(incident_id=envelope.subject))


async def count_effects(engine) -> int:
    async with engine.connect() as conn:
        return len((await conn.execute(select(effects))).all())


async def test_same_event_delivered_twice_has_one_effect(engine):
    consumer = make_consumer(engine, write_effect, DeadLetters())
    raw = reported().encode()
    assert await consumer.process(record(raw, 0)) == "processed"
    assert await consumer.process(record(raw, 1)) == "duplicate"
    assert await count_effects(engine) == 1


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "empty"),
        (b"{not json", "not_json"),
        (b'"a string"', "not_an_object"),
        (b'{"type": "IncidentReported", "version": 99, "data": {}}', "unknown_version"),
        (b'{"type": "Nope", "version": 1, "data": {}}', "unknown_type"),
        (b'{"type": "IncidentReported", "version": 1, "data": {"incident_id": "x"}}', "invalid_schema"),
    ],
)
async def test_poison_record_goes_to_dead_letter_twin_with_reason(engine, value, reason):
    dead = DeadLetters()
    consumer = make_consumer(engine, write_effect, dead)
    assert await consumer.process(record(value)) == "dead_lettered"
    topic, key, body, headers = dead.records[0]
    assert (topic, key, body) == ("topic.dlq", b"k", value)
    assert headers[HEADER_DLQ_REASON] == reason
    assert headers["h"] == "1" and headers["gw-dlq-source-offset"] == "0"
    # the partition keeps flowing: the next good record is processed
    assert await consumer.process(record(reported().encode(), 1)) == "processed"
    assert await count_effects(engine) == 1


async def test_failing_handler_is_retried_then_dead_lettered_without_partial_effects(engine):
    calls = 0

    async def broken(uow: UnitOfWork, envelope: Envelope) -> None:
        nonlocal calls
        calls += 1
        await write_effect(uow, envelope)
        raise ValueError("bug in handler")

    dead = DeadLetters()
    consumer = make_consumer(engine, broken, dead, attempts=3)
    assert await consumer.process(record(reported().encode())) == "dead_lettered"
    assert calls == 3
    assert dead.records[0][3][HEADER_DLQ_REASON] == "handler_failed"
    assert await count_effects(engine) == 0  # every attempt rolled back


async def test_transient_handler_failure_succeeds_on_retry_once(engine):
    calls = 0

    async def flaky(uow: UnitOfWork, envelope: Envelope) -> None:
        nonlocal calls
        calls += 1
        await write_effect(uow, envelope)
        if calls == 1:
            raise RuntimeError("transient")

    consumer = make_consumer(engine, flaky, DeadLetters())
    assert await consumer.process(record(reported().encode())) == "processed"
    assert await count_effects(engine) == 1


async def test_handler_rejecting_event_dead_letters_immediately(engine):
    calls = 0

    async def rejecting(uow: UnitOfWork, envelope: Envelope) -> None:
        nonlocal calls
        calls += 1
        raise PoisonMessage("unknown_incident", "no such handoff")

    dead = DeadLetters()
    consumer = make_consumer(engine, rejecting, dead)
    assert await consumer.process(record(reported().encode())) == "dead_lettered"
    assert calls == 1
    assert dead.records[0][3][HEADER_DLQ_REASON] == "unknown_incident"


async def test_database_outage_is_not_dead_lettered_but_raised_for_redelivery(engine):
    async def db_down(uow: UnitOfWork, envelope: Envelope) -> None:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("db down"))

    dead = DeadLetters()
    consumer = make_consumer(engine, db_down, dead)
    raw = reported().encode()
    with pytest.raises(OperationalError):
        await consumer.process(record(raw))
    assert dead.records == []
    # once the database is back, the redelivered record is processed (its id was not claimed)
    consumer._handlers["IncidentReported"] = write_effect
    assert await consumer.process(record(raw)) == "processed"


async def test_event_types_without_handler_are_acknowledged_and_ignored(engine):
    consumer = make_consumer(engine, write_effect, DeadLetters())
    consumer._handlers.clear()
    assert await consumer.process(record(reported().encode())) == "ignored"
    assert await count_effects(engine) == 0
