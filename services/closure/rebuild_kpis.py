"""Rebuild the KPI projection from Kafka, from offset zero, into a KPI store.

    python -m services.closure.rebuild_kpis --bootstrap HOST:PORT --topic-prefix P --database-url URL [--replace]

Replays every source topic of the projection (intake, classification, routing, sla, closure
outcomes) up to the end offsets seen at start, through the same `record_fact` the live
consumers use, and prints how many records it read. The store must be fresh unless `--replace`
(which deletes the KPI facts first); exit 2 when it is not or a source topic is missing.
On a secured cluster it logs in with the shared KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_* /
KAFKA_SSL_* settings, as closure's principal (deploy/KAFKA_SECURITY.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.envelope import Envelope, PoisonMessage
from contracts.events import CATALOGUE
from services.closure import kpi_store
from services.closure.kpi_handlers import KPI_SOURCES
from services.closure.repository import metadata
from services.runtime.db import create_engine
from services.runtime.kafka_security import aiokafka_client_kwargs
from services.runtime.settings import KafkaClientSettings


class StoreNotFresh(Exception):
    """The target store already holds KPI facts and --replace was not given."""


class MissingTopic(Exception):
    """A source topic does not exist: a wrong prefix would otherwise rebuild an empty projection."""


@dataclass(frozen=True)
class RebuildReport:
    """What a rebuild read: records per topic, how many were recorded, how many were unreadable."""

    records: dict[str, int]
    recorded: int
    unreadable: int


async def rebuild(
    bootstrap: str,
    topic_prefix: str,
    database_url: str,
    *,
    replace: bool = False,
    kafka: KafkaClientSettings | None = None,
) -> RebuildReport:
    """Replay the KPI source topics from offset zero into the KPI tables of `database_url`.

    `kafka` carries the security settings (the shared environment when None); `bootstrap` wins.
    """
    client = {**aiokafka_client_kwargs(kafka or KafkaClientSettings()), "bootstrap_servers": bootstrap}
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: metadata.create_all(sync, tables=list(kpi_store.KPI_TABLES)))
            if await kpi_store.count_facts(conn):
                if not replace:
                    raise StoreNotFresh(f"{database_url} already holds KPI facts; pass --replace to rebuild over them")
                await kpi_store.clear_facts(conn)
        records: Counter[str] = Counter()
        recorded = unreadable = 0
        for spec, _purpose, event_types in KPI_SOURCES:
            wanted = {t.event_type for t in event_types}
            topic = topic_prefix + spec.name
            async for batch in _read_from_zero(client, topic):
                records[topic] += len(batch)
                envelopes: list[Envelope] = []
                for value in batch:
                    try:
                        envelope = CATALOGUE.decode(value)
                    except PoisonMessage:
                        unreadable += 1  # the live consumer dead-lettered it too
                        continue
                    if envelope.type in wanted:
                        envelopes.append(envelope)
                await _record(engine, envelopes)
                recorded += len(envelopes)
        return RebuildReport(dict(records), recorded, unreadable)
    finally:
        await engine.dispose()


async def _record(engine: AsyncEngine, envelopes: list[Envelope]) -> None:
    async with engine.begin() as conn:
        for envelope in envelopes:
            await kpi_store.record_fact(conn, envelope)


async def _read_from_zero(client: dict[str, Any], topic: str):  # type: ignore[no-untyped-def]
    """Batches of record values of every partition, from the beginning to the end seen at start."""
    admin = AIOKafkaAdminClient(**client)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    numbers = sorted(p["partition"] for t in described if t["topic"] == topic for p in t["partitions"])
    if not numbers:
        raise MissingTopic(f"topic {topic} does not exist (check --topic-prefix)")
    partitions = [TopicPartition(topic, n) for n in numbers]
    consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=None, **client)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        while any([await consumer.position(tp) < end[tp] for tp in partitions]):
            fetched = await consumer.getmany(timeout_ms=1000, max_records=500)
            # Records appended after the start are left for the live consumers.
            batch = [m.value for tp, messages in fetched.items() for m in messages if m.offset < end[tp]]
            if batch:
                yield batch
    finally:
        await consumer.stop()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m services.closure.rebuild_kpis", description=__doc__)
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--topic-prefix", default="", help="the deployment's topic prefix")
    parser.add_argument("--database-url", required=True, help="SQLAlchemy async URL of the KPI store")
    parser.add_argument("--replace", action="store_true", help="delete existing KPI facts first")
    args = parser.parse_args(argv)
    try:
        report = asyncio.run(rebuild(args.bootstrap, args.topic_prefix, args.database_url, replace=args.replace))
    except (StoreNotFresh, MissingTopic) as refused:
        print(str(refused), file=sys.stderr)
        return 2
    print(json.dumps({"records": report.records, "recorded": report.recorded, "unreadable": report.unreadable}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
