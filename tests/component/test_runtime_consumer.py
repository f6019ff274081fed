"""The idempotent consumer: duplicates, poison records, bounded retries, infrastructure failures."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.exc import DBAPIError, OperationalError

from contracts.envelope import Envelope, PoisonMessage
from contracts.events import IncidentClosed
from contracts.vocabulary import ClosureOutcome
from services.runtime.clock import FakeClock
from services.runtime.consumer import HEADER_DLQ_REASON, EventConsumer, Record
from services.runtime.db import add_runtime_tables, create_engine, create_schema
from services.runtime.metrics import RuntimeMetrics
from services.runtime.outbox import UnitOfWork
from tests.support import envelope_for, reported

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


# --- batches: one transaction for the fetched records, record by record when one fails ------------


async def test_a_batch_is_processed_in_order_with_its_duplicates_once_and_positions_advanced(engine):
    consumer = make_consumer(engine, write_effect, DeadLetters())
    first, second = reported(), reported()
    already = reported()
    assert await consumer.process(record(already.encode(), 0)) == "processed"

    outcomes = await consumer.process_batch(
        [record(first.encode(), 1), record(second.encode(), 2), record(first.encode(), 3), record(already.encode(), 4)]
    )

    assert outcomes == ["processed", "processed", "duplicate", "duplicate"]
    assert await count_effects(engine) == 3
    assert consumer.positions[("topic", 0)] == 5


async def test_a_poison_record_in_a_batch_is_dead_lettered_and_its_neighbours_commit(engine):
    dead_letters = DeadLetters()
    consumer = make_consumer(engine, write_effect, dead_letters)

    outcomes = await consumer.process_batch([record(reported().encode(), 0), record(b"{not json", 1), record(reported().encode(), 2)])

    assert outcomes == ["processed", "dead_lettered", "processed"]
    assert await count_effects(engine) == 2
    [(_, _, value, headers)] = dead_letters.records
    assert value == b"{not json" and headers[HEADER_DLQ_REASON] == "not_json"


async def test_a_handler_failing_in_a_batch_rolls_the_batch_back_and_only_that_record_is_dead_lettered(engine):
    dead_letters = DeadLetters()
    bad = reported("坏记录")

    async def fail_on_one(uow: UnitOfWork, envelope: Envelope) -> None:
        await write_effect(uow, envelope)
        if envelope.id == bad.id:
            raise ValueError("cannot handle this one")

    consumer = make_consumer(engine, fail_on_one, dead_letters, attempts=2)
    outcomes = await consumer.process_batch([record(reported().encode(), 0), record(bad.encode(), 1), record(reported().encode(), 2)])

    assert outcomes == ["processed", "dead_lettered", "processed"]
    assert await count_effects(engine) == 2  # the failed record's own write rolled back with it
    assert [h[HEADER_DLQ_REASON] for *_, h in dead_letters.records] == ["handler_failed"]


async def test_an_infrastructure_failure_in_a_batch_commits_nothing_and_raises_for_redelivery(engine):
    async def database_gone(uow: UnitOfWork, envelope: Envelope) -> None:
        await write_effect(uow, envelope)
        raise OperationalError("SELECT 1", {}, ConnectionError("server closed the connection"))

    consumer = make_consumer(engine, database_gone, DeadLetters())
    with pytest.raises(OperationalError):
        await consumer.process_batch([record(reported().encode(), 0), record(reported().encode(), 1)])
    assert await count_effects(engine) == 0
    assert consumer.positions == {}


async def test_events_emitted_by_a_batch_are_staged_in_order_and_undone_with_a_rolled_back_step(engine):
    async def emit_and_undo_odd(uow: UnitOfWork, envelope: Envelope) -> None:
        await uow.emit(envelope)
        if envelope.data.description.endswith("撤"):
            del uow.emitted[:]  # what a handler does when a savepoint of its step rolled back

    consumer = make_consumer(engine, emit_and_undo_odd, DeadLetters())
    kept, undone, last = reported("甲"), reported("乙撤"), reported("丙")
    await consumer.process_batch([record(e.encode(), i) for i, e in enumerate((kept, undone, last))])

    async with engine.connect() as conn:
        staged = (await conn.execute(select(tables[0].c.event_id).order_by(tables[0].c.id))).scalars().all()
    assert staged == [str(kept.id), str(last.id)]


# --- batch handlers: a run of one type from one partition handled together ------------------------


def closed_envelope() -> Envelope:
    event = IncidentClosed(incident_id="inc-x", outcome=ClosureOutcome.RESOLVED, closed_at=datetime.now(UTC))
    return envelope_for(event, "inc-x")


async def test_a_batch_handler_gets_each_run_of_fresh_records_of_its_type_from_one_partition(engine):
    calls: list[tuple[str, list[str]]] = []

    async def one(uow: UnitOfWork, envelope: Envelope) -> None:
        calls.append(("one", [envelope.data.description]))

    async def many(uow: UnitOfWork, envelopes: list[Envelope]) -> None:
        assert uow.source is not None
        calls.append((f"many@{uow.source[1]}", [e.data.description for e in envelopes]))

    async def other(uow: UnitOfWork, envelope: Envelope) -> None:
        calls.append(("other", []))

    consumer = EventConsumer(
        name="test.group",
        dead_letter_topic="topic.dlq",
        handlers={"IncidentReported": one, "IncidentClosed": other},
        batch_handlers={"IncidentReported": many},
        unit_of_work=lambda: UnitOfWork(engine, tables, FakeClock()),
        publish_dead_letter=DeadLetters(),
        metrics=RuntimeMetrics("test"),
    )
    a, b, c, d, e, f = (reported(x) for x in "abcdef")
    seen = reported("seen")
    await consumer.process(record(seen.encode(), 0))
    records = [
        record(a.encode(), 1), record(b.encode(), 2), record(seen.encode(), 3),  # a duplicate does not break a run
        record(b"{not json", 4), record(c.encode(), 5),  # nor does a poison record
        record(closed_envelope().encode(), 6),
        record(d.encode(), 7),
        Record(topic="topic", partition=1, offset=0, key=b"k", value=e.encode(), headers={}),
        Record(topic="topic", partition=1, offset=1, key=b"k", value=f.encode(), headers={}),
    ]
    calls.clear()
    outcomes = await consumer.process_batch(records)

    assert outcomes == ["processed", "processed", "duplicate", "dead_lettered", "processed", "processed", "processed",
                        "processed", "processed"]
    assert calls == [("many@0", ["a", "b", "c"]), ("other", []), ("one", ["d"]), ("many@1", ["e", "f"])]


def test_a_batch_handler_needs_a_per_record_handler_for_records_redelivered_alone(engine):
    async def many(uow: UnitOfWork, envelopes: list[Envelope]) -> None: ...

    with pytest.raises(ValueError, match="IncidentReported"):
        EventConsumer(
            name="g", dead_letter_topic="d", handlers={}, batch_handlers={"IncidentReported": many},
            unit_of_work=lambda: UnitOfWork(engine, tables, FakeClock()), publish_dead_letter=DeadLetters(),
            metrics=RuntimeMetrics("test"),
        )


# --- transactions that lose a deadlock ------------------------------------------------------------


class LostDeadlock(Exception):
    sqlstate = "40P01"  # what asyncpg reports, and SQLAlchemy's adapter exposes as .orig.sqlstate


def deadlock() -> DBAPIError:
    return DBAPIError("UPDATE incidents ...", {}, LostDeadlock("deadlock detected"))


async def test_a_batch_whose_transaction_loses_a_deadlock_runs_again_whole(engine):
    losses = []

    async def lose_once(uow: UnitOfWork, envelope: Envelope) -> None:
        await write_effect(uow, envelope)
        if not losses:
            losses.append(envelope.id)
            raise deadlock()

    consumer = make_consumer(engine, lose_once, dead_letters := DeadLetters())
    outcomes = await consumer.process_batch([record(reported().encode(), i) for i in range(3)])

    assert outcomes == ["processed"] * 3
    assert await count_effects(engine) == 3 and dead_letters.records == []
    assert consumer._metrics.registry.get_sample_value(
        "gridwhistle_test_handler_retries_total", {"topic": "topic", "kind": "conflict"}
    ) == 1


async def test_a_record_that_keeps_losing_deadlocks_is_redelivered_never_dead_lettered(engine):
    async def always_lose(uow: UnitOfWork, envelope: Envelope) -> None:
        raise deadlock()

    consumer = make_consumer(engine, always_lose, dead_letters := DeadLetters(), attempts=2)
    with pytest.raises(DBAPIError):
        await consumer.process_batch([record(reported().encode(), 0), record(reported().encode(), 1)])
    assert dead_letters.records == [] and consumer.positions == {}
