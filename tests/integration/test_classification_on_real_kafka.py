"""One service on a real broker and a real PostgreSQL: outbox, idempotent consumer, dead letters."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from contracts.envelope import header_map
from contracts.topics import CLASSIFICATION_DECISIONS, INTAKE_INCIDENTS
from services.classification.app import create_app
from services.classification.settings import ClassificationSettings
from services.runtime.consumer import HEADER_DLQ_REASON
from tests.e2e.stack import eventually, read_topic
from tests.support import records_from_start, reported

pytestmark = pytest.mark.integration


@pytest.fixture
async def classification(kafka_bootstrap, kafka_topics, topic_prefix, pg_url):
    settings = ClassificationSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        database_url=pg_url,
        outbox_poll_seconds=0.1,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


async def send(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes, dict[str, str]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(topic, value, key=key, headers=[(k, v.encode()) for k, v in headers.items()])
    finally:
        await producer.stop()


async def test_poison_records_are_dead_lettered_and_the_partition_keeps_flowing(
    classification, kafka_bootstrap, topic_prefix
):
    incident = reported("厨房着火了")
    key = incident.key()
    source = topic_prefix + INTAKE_INCIDENTS.name
    # same key = same partition: the good record sits behind the poison ones
    await send(
        kafka_bootstrap,
        source,
        [
            (key, b"\x00\x01 not json", {}),
            (key, b'{"type": "IncidentReported", "version": 7, "data": {}}', {"gw-type": "IncidentReported"}),
            (key, b'{"type": "IncidentReported", "version": 1, "data": {"grid_id": 5}}', {}),
            (key, incident.encode(), incident.headers()),
            (key, incident.encode(), incident.headers()),  # redelivered duplicate
        ],
    )
    decisions = await eventually(
        lambda: read_topic(kafka_bootstrap, topic_prefix + CLASSIFICATION_DECISIONS.name, subject=incident.subject),
        lambda found: len(found) >= 1,
        what="the good record classified behind the poison ones",
    )
    await asyncio.sleep(1.0)
    decisions = await read_topic(kafka_bootstrap, topic_prefix + CLASSIFICATION_DECISIONS.name, subject=incident.subject)
    assert [d.type for d in decisions] == ["IncidentClassified"], "duplicate delivery must have one effect"
    assert decisions[0].data.category.value == "fire"

    dead = await _raw_dead_letters(kafka_bootstrap, topic_prefix + INTAKE_INCIDENTS.dead_letter)
    reasons = sorted(h[HEADER_DLQ_REASON] for h in dead)
    assert reasons == ["invalid_schema", "not_json", "unknown_version"]


async def _raw_dead_letters(bootstrap: str, topic: str) -> list[dict[str, str]]:
    return [header_map(r.headers) for r in await records_from_start(bootstrap, topic)]