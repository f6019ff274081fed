"""A non-Python client (kcat, librdkafka) reads what a service published and finds the published contract."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import jsonschema
import pytest
from aiokafka import AIOKafkaProducer

from contracts import generate
from contracts.topics import CLASSIFICATION_DECISIONS, INTAKE_INCIDENTS
from services.classification.app import create_app
from services.classification.settings import ClassificationSettings
from tests._infra import unavailable
from tests.e2e.stack import eventually, read_topic
from tests.support import reported

pytestmark = pytest.mark.integration


@pytest.fixture
def kcat() -> str:
    path = shutil.which("kcat")
    if path is None:
        unavailable("kcat is not installed (Debian: apt-get install kcat)")
    return path


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


async def test_kcat_reads_a_classified_event_that_matches_its_published_schema(
    kcat, classification, kafka_bootstrap, topic_prefix
):
    incident = reported("厨房着火了，烟很大")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            topic_prefix + INTAKE_INCIDENTS.name,
            incident.encode(),
            key=incident.key(),
            headers=[(k, v.encode()) for k, v in incident.headers().items()],
        )
    finally:
        await producer.stop()
    decisions = topic_prefix + CLASSIFICATION_DECISIONS.name
    await eventually(
        lambda: read_topic(kafka_bootstrap, decisions, subject=incident.subject),
        lambda found: len(found) == 1,
        what="classification published its decision",
    )

    command = [kcat, "-C", "-b", kafka_bootstrap, "-t", decisions, "-c", "1", "-e", "-o", "beginning", "-J", "-q"]
    result = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.splitlines()[0])

    value = json.loads(record["payload"])
    schema = json.loads(generate.schema_path(generate.SCHEMA_DIR, "IncidentClassified", 1).read_text())
    jsonschema.validate(value, schema)
    assert record["key"] == incident.subject
    # kcat -J prints headers as a flat [name, value, name, value, ...] list
    headers = dict(zip(record["headers"][::2], record["headers"][1::2], strict=True))
    assert headers["gw-type"] == value["type"] == "IncidentClassified"
    assert headers["gw-version"] == str(value["version"]) == "1"
    assert headers["gw-id"] == value["id"]
    assert value["correlation_id"] == str(incident.correlation_id)
