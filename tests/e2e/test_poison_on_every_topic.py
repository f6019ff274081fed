"""End to end: malformed records on every catalogue topic are dead-lettered by every consumer group,
and the partitions they sat on keep flowing for the next real incident."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from contracts.asyncapi import service_subscriptions
from contracts.envelope import header_map
from contracts.events import CATALOGUE
from contracts.examples import example_envelope
from contracts.reference import demo_city
from contracts.topics import TOPICS, TopicSpec
from services.runtime.consumer import HEADER_DLQ_REASON
from tests.e2e.stack import Stack, eventually
from tests.support import records_from_start

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

DLQ_CONSUMER = "gw-dlq-consumer"


def poison_records(spec: TopicSpec) -> dict[str, bytes]:
    """One record per kind of malformation, keyed by the reason the consumers must give."""
    model = CATALOGUE.latest(spec.events[0])
    missing_field = json.loads(example_envelope(model).encode())
    missing_field["id"] = str(uuid.uuid4())
    del missing_field["data"]["incident_id"]
    return {
        "not_json": b"\x00\x01 this is not json",
        "unknown_type": json.dumps({"type": "IncidentTeleported", "version": 1, "data": {}}).encode(),
        "unknown_version": json.dumps({"type": model.event_type, "version": 99, "data": {}}).encode(),
        "invalid_schema": json.dumps(missing_field).encode(),
    }


async def publish_on_every_partition(bootstrap: str, topic: str, records: dict[str, bytes], partitions: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for partition in range(partitions):
            for reason, value in records.items():
                await producer.send_and_wait(
                    topic, value, key=f"poison-{reason}".encode(), partition=partition, headers=[("gw-type", b"?")]
                )
    finally:
        await producer.stop()


async def dead_letter_headers(bootstrap: str, topic: str) -> list[dict[str, str]]:
    """The headers of every record on a dead-letter topic (values may not be JSON, so none is decoded)."""
    return [header_map(r.headers) for r in await records_from_start(bootstrap, topic)]


def tally(headers: list[dict[str, str]]) -> Counter[tuple[str, str]]:
    return Counter((h.get(DLQ_CONSUMER, ""), h.get(HEADER_DLQ_REASON, "")) for h in headers)


async def test_every_consumer_group_dead_letters_malformed_records_and_keeps_flowing(stack: Stack):
    subscriptions = service_subscriptions()
    for spec in TOPICS:
        await publish_on_every_partition(
            stack.bootstrap, stack.prefix + spec.name, poison_records(spec), spec.partitions
        )

    for spec in TOPICS:
        groups = [stack.prefix + s.group_id for s in subscriptions if s.topic == spec]
        assert groups, f"no service consumes {spec.name}"
        expected = Counter(
            {(group, reason): spec.partitions for group in groups for reason in poison_records(spec)}
        )
        found = await eventually(
            lambda spec=spec: dead_letter_headers(stack.bootstrap, stack.prefix + spec.dead_letter),
            lambda headers, expected=expected: tally(headers) == expected,
            timeout=60,
            what=f"every group of {spec.name} dead-letters each malformed record once per partition",
        )
        assert all(h["gw-dlq-source-topic"] == stack.prefix + spec.name for h in found)

    grid = demo_city().grid("G0001")
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{stack.url('intake')}/api/v1/incidents",
            json={
                "grid_id": grid.id,
                "reporter_id": grid.grid_worker_ids[0],
                "description": "楼道里堆满纸箱，有火灾隐患",
                "location": {"latitude": grid.latitude, "longitude": grid.longitude, "address": "东城区幸福路8号"},
            },
            headers={"Idempotency-Key": str(uuid.uuid4()), **stack.as_user(grid.grid_worker_ids[0])},
        )
        assert response.status_code == 202, response.text
        incident_id = response.json()["incident_id"]

        async def view() -> dict:
            answer = await client.get(f"{stack.url('intake')}/api/v1/incidents/{incident_id}", headers=stack.as_user("admin"))
            return answer.json() if answer.status_code == 200 else {}

        await eventually(
            view,
            lambda v: v.get("urgency") is not None and len(v.get("handoffs", [])) >= 1,
            timeout=60,
            what="an incident reported after the poison is classified and dispatched",
        )
