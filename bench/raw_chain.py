"""The raw-aiokafka baseline: a chain of hops doing the same work as a service, without the framework.

    python -m bench.raw_chain --bootstrap HOST:PORT --database-url URL --topics t0 t1 ... tN

One asyncio task per hop i (topics[i] -> topics[i+1]), all in this one process so its CPU seconds
are one figure: consume a batch, and per record one PostgreSQL transaction inserting the state row
and an outbox-equivalent row, then produce the record unchanged (acks=all, idempotent); the batch's
offsets are committed once its sends are acknowledged. Runs until SIGTERM; prints "ready" once
every hop has its partitions.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

SCHEMA = """
CREATE TABLE IF NOT EXISTS raw_state (hop int, id text, payload bytea, PRIMARY KEY (hop, id));
CREATE TABLE IF NOT EXISTS raw_outbox (seq bigserial PRIMARY KEY, hop int, id text, payload bytea);
"""


async def hop(number: int, source: str, target: str, bootstrap: str, pool: asyncpg.Pool,
              producer: AIOKafkaProducer, assigned: asyncio.Event) -> None:
    """Forward every record of `source` to `target` through one transaction per record."""
    consumer = AIOKafkaConsumer(
        source, bootstrap_servers=bootstrap, group_id=f"raw-hop-{number}-{source}", enable_auto_commit=False,
        auto_offset_reset="latest",
    )
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        # Position every partition now, so records sent after "ready" are not skipped by "latest".
        for partition in consumer.assignment():
            await consumer.position(partition)
        assigned.set()
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=500)
            sends = []
            for records in batches.values():
                for record in records:
                    key = record.key.decode()
                    async with pool.acquire() as conn, conn.transaction():
                        await conn.execute(
                            "INSERT INTO raw_state (hop, id, payload) VALUES ($1, $2, $3) "
                            "ON CONFLICT (hop, id) DO UPDATE SET payload = excluded.payload",
                            number, key, record.value,
                        )
                        await conn.execute(
                            "INSERT INTO raw_outbox (hop, id, payload) VALUES ($1, $2, $3)", number, key, record.value
                        )
                    sends.append(await producer.send(target, record.value, key=record.key, headers=record.headers))
            if sends:
                await asyncio.gather(*sends)
                await consumer.commit()
    finally:
        await consumer.stop()


async def main_async(bootstrap: str, database_url: str, topics: list[str]) -> None:
    """Run every hop until SIGTERM."""
    pool = await asyncpg.create_pool(database_url.replace("postgresql+asyncpg", "postgresql"), min_size=2, max_size=len(topics) + 2)
    async with pool.acquire() as conn:
        await conn.execute(SCHEMA)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=1)
    await producer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    ready = [asyncio.Event() for _ in topics[1:]]
    tasks = [
        asyncio.create_task(hop(i, topics[i], topics[i + 1], bootstrap, pool, producer, ready[i]))
        for i in range(len(topics) - 1)
    ]
    waiting = asyncio.gather(*(event.wait() for event in ready))
    done, _ = await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if waiting in done:
        print("ready", flush=True)
    await asyncio.wait([asyncio.create_task(stop.wait()), *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await producer.stop()
    await pool.close()


def main() -> None:
    """Parse the arguments and run the chain."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--topics", nargs="+", required=True)
    args = parser.parse_args()
    asyncio.run(main_async(args.bootstrap, args.database_url, args.topics))


if __name__ == "__main__":
    main()
