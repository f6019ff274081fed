"""The raw-aiokafka baseline of the SLA timer's arm path: the same work, without the framework.

    python -m bench.raw_sla_arm --bootstrap HOST:PORT --database-url URL --source TOPIC --target TOPIC

Consumes HandoffDispatched records and, per fetched batch, in one asyncpg transaction: records
the event ids (a duplicate ends there), inserts each dispatch's report deadline, and stages a
DeadlineArmed in an outbox table, all with set-based statements. After the commit it sends the
staged records (acks=all, idempotent, keyed by incident), awaits their acknowledgements, marks
them published and commits the batch's offsets. What the service adds on top of this is the
measured cost of the framework: validation of every envelope, FastStream, SQLAlchemy, the
relay as its own loop, metrics and logs. Runs until SIGTERM; prints "ready" once it has its
partitions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from datetime import UTC, datetime

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

# Pure functions (uuid5 of the handoff and kind): the ids must be the service's own.
from contracts.vocabulary import DeadlineKind
from services.sla_timer.domain import deadline_id, signal_event_id

SCHEMA = """
CREATE TABLE IF NOT EXISTS raw_processed (event_id text PRIMARY KEY, processed_at timestamptz NOT NULL);
CREATE TABLE IF NOT EXISTS raw_deadlines (
    id text PRIMARY KEY, incident_id text NOT NULL, handoff_id text NOT NULL, unit_id text, urgency text NOT NULL,
    armed_at timestamptz NOT NULL, due_at timestamptz NOT NULL, next_fire_at timestamptz, state text NOT NULL
);
CREATE INDEX IF NOT EXISTS raw_deadlines_next_fire ON raw_deadlines (next_fire_at) WHERE state = 'armed';
CREATE TABLE IF NOT EXISTS raw_outbox (
    seq bigserial PRIMARY KEY, topic text NOT NULL, key text NOT NULL, payload bytea NOT NULL,
    published_at timestamptz
);
"""


def report_deadline_id(handoff_id: str) -> str:
    """The id the service gives a handoff's report deadline (the watcher looks deadlines up by it)."""
    return deadline_id(handoff_id, DeadlineKind.REPORT)


def armed_record(dispatch: dict, now: str) -> tuple[str, bytes]:
    """(key, value) of the DeadlineArmed envelope for one decoded HandoffDispatched envelope."""
    data = dispatch["data"]
    deadline = report_deadline_id(data["handoff_id"])
    event = {
        "id": str(signal_event_id(deadline, "armed")), "type": "DeadlineArmed", "version": 1,
        "source": "raw_sla_arm", "occurred_at": now, "subject": data["incident_id"],
        "correlation_id": dispatch["correlation_id"], "causation_id": dispatch["id"], "policy_version": None,
        "data": {
            "incident_id": data["incident_id"], "deadline_id": deadline, "handoff_id": data["handoff_id"],
            "kind": "report", "due_at": data["report_due_at"], "urgency": data["urgency"], "unit_id": data["unit_id"],
        },
    }
    return data["incident_id"], json.dumps(event).encode()


async def arm(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, pool: asyncpg.Pool, target: str) -> None:
    """Arm the report deadline of every dispatch consumed, batch by batch, until cancelled."""
    while True:
        batches = await consumer.getmany(timeout_ms=100, max_records=500)
        records = [record for batch in batches.values() for record in batch]
        if not records:
            continue
        envelopes = [json.loads(record.value) for record in records]
        now = datetime.now(UTC)
        async with pool.acquire() as conn:
            async with conn.transaction():
                fresh = {
                    row["event_id"]
                    for row in await conn.fetch(
                        "INSERT INTO raw_processed SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING RETURNING event_id",
                        [e["id"] for e in envelopes], now,
                    )
                }
                dispatches = [e for e in envelopes if e["id"] in fresh and e["type"] == "HandoffDispatched"]
                rows = [
                    (report_deadline_id(e["data"]["handoff_id"]), e["data"]["incident_id"], e["data"]["handoff_id"],
                     e["data"]["unit_id"], e["data"]["urgency"], datetime.fromisoformat(e["data"]["dispatched_at"]),
                     datetime.fromisoformat(e["data"]["report_due_at"]))
                    for e in dispatches
                ]
                stored = {
                    row["id"]
                    for row in await conn.fetch(
                        "INSERT INTO raw_deadlines SELECT d.*, d.due, 'armed' FROM unnest($1::text[], $2::text[], "
                        "$3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::timestamptz[]) "
                        "AS d(id, incident, handoff, unit, urgency, armed, due) ON CONFLICT DO NOTHING RETURNING id",
                        *map(list, zip(*rows, strict=True)),
                    )
                } if rows else set()
                staged = [armed_record(e, now.isoformat()) for e, row in zip(dispatches, rows, strict=True) if row[0] in stored]
                sequence = [
                    row["seq"]
                    for row in await conn.fetch(
                        "INSERT INTO raw_outbox (topic, key, payload) SELECT $1, * FROM unnest($2::text[], $3::bytea[]) "
                        "RETURNING seq",
                        target, [key for key, _ in staged], [value for _, value in staged],
                    )
                ] if staged else []
            sends = [await producer.send(target, value, key=key.encode()) for key, value in staged]
            await asyncio.gather(*sends)
            if sequence:
                await conn.execute("UPDATE raw_outbox SET published_at = $1 WHERE seq = ANY($2::bigint[])", now, sequence)
        await consumer.commit()


async def main_async(bootstrap: str, database_url: str, source: str, target: str) -> None:
    """Arm until SIGTERM."""
    pool = await asyncpg.create_pool(database_url.replace("postgresql+asyncpg", "postgresql"), min_size=1, max_size=2)
    async with pool.acquire() as conn:
        await conn.execute(SCHEMA)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=1)
    consumer = AIOKafkaConsumer(
        source, bootstrap_servers=bootstrap, group_id=f"raw-sla-arm-{source}", enable_auto_commit=False,
        auto_offset_reset="latest",
    )
    await producer.start()
    await consumer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        for partition in consumer.assignment():
            await consumer.position(partition)  # so that records sent after "ready" are not skipped by "latest"
        print("ready", flush=True)
        task = asyncio.create_task(arm(consumer, producer, pool, target))
        await asyncio.wait([task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await consumer.stop()
        await producer.stop()
        await pool.close()


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    args = parser.parse_args()
    asyncio.run(main_async(args.bootstrap, args.database_url, args.source, args.target))


if __name__ == "__main__":
    main()
