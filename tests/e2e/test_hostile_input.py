"""End to end, through the real broker: hostile records, a whole-system replay, and out-of-order facts.

- Truncated, empty (zero bytes and a null value), wrongly typed, unknown-version and huge (just
  under the broker's message size limit) records on every topic are dead-lettered once per
  consumer group with their reason, and the partitions keep flowing.
- Every record of every topic re-produced from offset zero into the running system changes
  nothing: no new event anywhere, every service's view of every incident unchanged, and no valid
  record dead-lettered.
- Facts of one incident arriving in the wrong order at routing and sla_timer (an acknowledgement
  before its dispatch, a closure before a dispatch, a reclassification before the classification,
  a breach of a handoff never dispatched) produce no breach, no second dispatch and no dead letter.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from contracts.asyncapi import service_subscriptions
from contracts.envelope import Envelope, Event, PoisonMessage, correlation_for, header_map, make_envelope
from contracts.events import (
    CATALOGUE,
    DeadlineBreached,
    HandoffAcknowledged,
    HandoffDispatched,
    IncidentClassified,
    IncidentClosed,
    IncidentReclassified,
)
from contracts.examples import example_envelope
from contracts.reference import demo_city
from contracts.topics import (
    CLOSURE_OUTCOMES,
    ROUTING_HANDOFFS,
    SLA_DEADLINES,
    TOPICS,
    TopicSpec,
)
from services.runtime.consumer import HEADER_DLQ_REASON, HEADER_DLQ_VALUE_DROPPED
from tests.e2e.stack import Stack, eventually
from tests.support import records_from_start

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

DLQ_CONSUMER = "gw-dlq-consumer"
# The broker's default message.max.bytes (a record batch), which the topics do not override.
BROKER_MAX_MESSAGE_BYTES = 1_048_588
CITY = demo_city()


# --- Kafka plumbing ---------------------------------------------------------------------------


async def produce(bootstrap: str, topic: str, records: Iterable[tuple[int | None, bytes | None, bytes | None]]) -> None:
    """Produce (partition, key, value) records in order and wait for each acknowledgement."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, max_request_size=2 * BROKER_MAX_MESSAGE_BYTES
    )
    await producer.start()
    try:
        for partition, key, value in records:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


async def publish(bootstrap: str, prefix: str, *envelopes: Envelope) -> None:
    """Publish envelopes as their owners would: on their topic, keyed by incident, with their headers."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for envelope in envelopes:
            spec = next(t for t in TOPICS if envelope.type in t.events)
            headers = [(k, v.encode()) for k, v in envelope.headers().items()]
            await producer.send_and_wait(prefix + spec.name, envelope.encode(), key=envelope.key(), headers=headers)
    finally:
        await producer.stop()


def decodable(record: Any) -> Envelope | None:
    """The envelope a record carries, or None for a poison record."""
    try:
        return CATALOGUE.decode(record.value)
    except PoisonMessage:
        return None


async def events_on(bootstrap: str, topic: str, subject: str | None = None) -> list[Envelope]:
    """The valid events of a topic (poison records skipped), optionally of one incident."""
    found = [decodable(r) for r in await records_from_start(bootstrap, topic)]
    return [e for e in found if e is not None and (subject is None or e.subject == subject)]


async def dead_letters(bootstrap: str, spec: TopicSpec, prefix: str) -> list[Any]:
    return await records_from_start(bootstrap, prefix + spec.dead_letter)


def groups_of(prefix: str) -> dict[str, str]:
    """Every consumer group of the system and the topic it consumes (full names)."""
    return {prefix + s.group_id: prefix + s.topic.name for s in service_subscriptions()}


async def consumed_to_the_end(bootstrap: str, prefix: str, groups: dict[str, str] | None = None) -> list[str]:
    """The groups whose committed offsets are still behind the end of their topic (empty: caught up)."""
    groups = groups or groups_of(prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        behind = []
        ends: dict[str, dict[TopicPartition, int]] = {}
        for topic in set(groups.values()):
            await consumer._client.force_metadata_update()  # noqa: SLF001
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            ends[topic] = await consumer.end_offsets(partitions)
        for group, topic in groups.items():
            committed = await admin.list_consumer_group_offsets(group)
            for tp, end in ends[topic].items():
                done = committed.get(tp)
                if end > 0 and (done is None or done.offset < end):
                    behind.append(f"{group} {tp.partition}: {done.offset if done else None} < {end}")
        return behind
    finally:
        await consumer.stop()
        await admin.close()


async def wait_consumed(stack: Stack, groups: dict[str, str] | None = None, timeout: float = 120) -> None:
    await eventually(
        lambda: consumed_to_the_end(stack.bootstrap, stack.prefix, groups),
        lambda behind: behind == [],
        timeout=timeout,
        what="every consumer group committed up to the end of its topic",
    )


# --- 1. hostile records -----------------------------------------------------------------------


def hostile_records(spec: TopicSpec) -> dict[str, bytes | None]:
    """One record per kind of hostility, keyed by the dead-letter reason the consumers must give."""
    model = CATALOGUE.latest(spec.events[0])
    valid = json.loads(example_envelope(model).encode())

    def variant(**changes: Any) -> bytes:
        document = json.loads(json.dumps(valid))
        document["id"] = str(uuid.uuid4())
        for key, value in changes.items():
            if key == "data":
                document["data"].update(value)
            else:
                document[key] = value
        return json.dumps(document).encode()

    whole = variant()
    return {
        "not_json": whole[: len(whole) // 2],  # a truncated envelope
        "empty": b"",
        "invalid_schema": variant(data={"incident_id": 12345}),  # a field of the wrong type
        "unknown_version": variant(version=99),  # a real type from a future producer, with real data
    }


def huge_record(spec: TopicSpec, size: int) -> bytes:
    """A well-formed envelope of `size` bytes (a description or reason padded out), over the decoder's limit."""
    model = CATALOGUE.latest(spec.events[0])
    document = json.loads(example_envelope(model).encode())
    document["id"] = str(uuid.uuid4())
    document["data"]["padding"] = ""
    base = len(json.dumps(document).encode())
    document["data"]["padding"] = "x" * (size - base)
    encoded = json.dumps(document).encode()
    assert len(encoded) == size
    return encoded


def tally(records: list[Any]) -> Counter[tuple[str, str]]:
    found = Counter()
    for record in records:
        headers = header_map(record.headers)
        found[(headers.get(DLQ_CONSUMER, ""), headers.get(HEADER_DLQ_REASON, ""))] += 1
    return found


async def test_hostile_records_on_every_topic_are_dead_lettered_once_per_group_and_the_flow_goes_on(stack: Stack):
    subscriptions = service_subscriptions()
    # Record batch overhead, key and offsets take a few hundred bytes: just under the broker's limit.
    huge = BROKER_MAX_MESSAGE_BYTES - 400
    for spec in TOPICS:
        topic = stack.prefix + spec.name
        records = [(p, f"hostile-{reason}".encode(), value)
                   for p in range(spec.partitions) for reason, value in hostile_records(spec).items()]
        records += [(p, b"hostile-null", None) for p in range(spec.partitions)]  # a tombstone: no value at all
        records += [(0, b"hostile-huge", huge_record(spec, huge))]
        await produce(stack.bootstrap, topic, records)

    dropped = 0
    for spec in TOPICS:
        groups = [stack.prefix + s.group_id for s in subscriptions if s.topic == spec]
        expected = Counter()
        for group in groups:
            for reason in hostile_records(spec):
                expected[(group, reason)] += spec.partitions
            expected[(group, "empty")] += spec.partitions  # the null values
            expected[(group, "too_large")] += 1
        found = await eventually(
            lambda spec=spec: dead_letters(stack.bootstrap, spec, stack.prefix),
            lambda records, expected=expected: tally(records) == expected,
            timeout=120,
            what=f"every group of {spec.name} dead-letters each hostile record exactly once",
        )
        # The huge record may no longer fit its dead-letter twin once the headers are added (it depends
        # on how long the group's and topic's names are): then it is stored without its value, and
        # the headers say where it came from, why, and how big it was.
        huge_letters = [r for r in found if header_map(r.headers).get(HEADER_DLQ_REASON) == "too_large"]
        assert huge_letters and all(r.key == b"hostile-huge" for r in huge_letters)
        for letter in huge_letters:
            if header_map(letter.headers).get(HEADER_DLQ_VALUE_DROPPED) is not None:
                assert not letter.value and header_map(letter.headers)[HEADER_DLQ_VALUE_DROPPED] == str(huge)
            else:
                assert len(letter.value) == huge
        dropped += sum(1 for r in huge_letters if not r.value)

    # Just under the limit, at least one dead letter cannot carry the value (the case that used to
    # block its partition forever).
    assert dropped, "no dead letter had to drop the huge value: the record was not near the limit"
    await wait_consumed(stack)  # nothing is redelivered forever: every group got past every record
    incident_id = await report(stack, "楼道里堆满纸箱，有火灾隐患", grid_id="G0002")
    await eventually(
        lambda: intake_view(stack, incident_id),
        lambda v: v.get("urgency") is not None and len(v.get("handoffs", [])) >= 1,
        timeout=90,
        what="an incident reported after the hostile records is classified and dispatched",
    )


# --- 2. replay of every topic -----------------------------------------------------------------


async def report(stack: Stack, description: str, *, grid_id: str = "G0001") -> str:
    grid = CITY.grid(grid_id)
    async with httpx.AsyncClient(timeout=15) as client:
        response = await client.post(
            f"{stack.url('intake')}/api/v1/incidents",
            json={"grid_id": grid.id, "reporter_id": grid.grid_worker_ids[0], "description": description,
                  "location": {"latitude": grid.latitude, "longitude": grid.longitude, "address": f"{grid.id}网格"}},
            headers={"Idempotency-Key": str(uuid.uuid4()), **stack.as_user(grid.grid_worker_ids[0])},
        )
    assert response.status_code == 202, response.text
    return response.json()["incident_id"]


async def get_json(stack: Stack, service: str, path: str, user: str = "admin") -> Any:
    async with httpx.AsyncClient(timeout=15) as client:
        response = await client.get(stack.url(service) + path, headers=stack.as_user(user))
    return response.json() if response.status_code == 200 else {"status_code": response.status_code}


async def intake_view(stack: Stack, incident_id: str) -> dict:
    return await get_json(stack, "intake", f"/api/v1/incidents/{incident_id}")


async def post(stack: Stack, service: str, path: str, user: str, body: dict | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=15) as client:
        return await client.post(stack.url(service) + path, json=body, headers=stack.as_user(user))


async def member_of(stack: Stack, unit_id: str) -> str:
    return (await get_json(stack, "routing", f"/api/v1/units/{unit_id}"))["members"][0]


async def handoffs(stack: Stack, incident_id: str) -> list[dict]:
    return (await get_json(stack, "routing", f"/api/v1/incidents/{incident_id}/handoffs")).get("handoffs", [])


async def close_incident(stack: Stack, incident_id: str, grid_worker: str) -> None:
    """Acknowledge and resolve every handoff, verify and give feedback: the whole lifecycle."""
    for handoff in await handoffs(stack, incident_id):
        actor = await member_of(stack, handoff["unit_id"])
        for step, body in (("acknowledge", None), ("resolve", {"disposition": "resolved", "note": "已处置"})):
            response = await post(stack, "routing", f"/api/v1/handoffs/{handoff['handoff_id']}/{step}", actor, body)
            assert response.is_success, response.text
    await eventually(lambda: get_json(stack, "closure", f"/api/v1/incidents/{incident_id}"),
                     lambda v: v.get("status") == "awaiting_verification", timeout=60, what="awaiting verification")
    response = await post(stack, "closure", f"/api/v1/incidents/{incident_id}/verification", grid_worker, {"confirmed": True})
    assert response.is_success, response.text
    response = await post(stack, "closure", f"/api/v1/incidents/{incident_id}/feedback", grid_worker,
                          {"satisfaction": "satisfied", "comment": "及时"})
    assert response.is_success, response.text
    await eventually(lambda: get_json(stack, "closure", f"/api/v1/incidents/{incident_id}"),
                     lambda v: v.get("status") == "closed", timeout=60, what="closed")


async def event_ids(stack: Stack) -> dict[str, set[str]]:
    """The distinct event ids on each topic."""
    return {spec.name: {str(e.id) for e in await events_on(stack.bootstrap, stack.prefix + spec.name)} for spec in TOPICS}


# Fields of the views that move with the clock rather than with the facts.
_MOVING = ("seconds_left", "remaining", "as_of", "now", "overdue", "elapsed")


def steady(view: Any) -> Any:
    """A view without its clock-driven fields, for before/after comparison."""
    if isinstance(view, dict):
        return {k: steady(v) for k, v in view.items() if not any(m in k for m in _MOVING)}
    if isinstance(view, list):
        return [steady(v) for v in view]
    return view


async def views(stack: Stack, incidents: list[str]) -> dict[str, Any]:
    """What every service shows about each incident, and closure's KPIs."""
    seen: dict[str, Any] = {"kpis": await get_json(stack, "closure", "/api/v1/kpis", "sup-1")}
    for incident_id in incidents:
        seen[incident_id] = {
            "intake": await intake_view(stack, incident_id),
            "routing": await handoffs(stack, incident_id),
            "sla_timer": await get_json(stack, "sla_timer", f"/api/v1/deadlines?incident_id={incident_id}"),
            "closure": await get_json(stack, "closure", f"/api/v1/incidents/{incident_id}"),
            "timeline": await get_json(stack, "closure", f"/api/v1/incidents/{incident_id}/timeline"),
        }
    return steady(seen)


async def quiet(stack: Stack, settle: float = 3.0, timeout: float = 120) -> dict[str, set[str]]:
    """Wait until no topic gains an event for `settle` seconds; return the ids then."""
    deadline = time.monotonic() + timeout
    before = await event_ids(stack)
    while time.monotonic() < deadline:
        await asyncio.sleep(settle)
        now = await event_ids(stack)
        if now == before:
            return now
        before = now
    raise AssertionError("the system did not settle")


async def test_replaying_every_topic_from_offset_zero_changes_nothing_downstream(stack: Stack):
    grid_worker = CITY.grid("G0003").grid_worker_ids[0]
    closed = [await report(stack, "楼下有人打架，有人流血，请民警快来", grid_id="G0003") for _ in range(2)]
    acknowledged = await report(stack, "有人持刀伤人，请民警快来", grid_id="G0004")
    breached = await report(stack, "楼上邻居装修噪音太大，影响休息", grid_id="G0005")  # general: 4 s, ignored
    incidents = [*closed, acknowledged, breached]
    for incident_id in incidents:
        await eventually(lambda i=incident_id: handoffs(stack, i), lambda h: len(h) >= 1, timeout=90,
                         what=f"{incident_id} dispatched")
    for incident_id in closed:
        await close_incident(stack, incident_id, grid_worker)
    for handoff in await handoffs(stack, acknowledged):
        response = await post(stack, "routing", f"/api/v1/handoffs/{handoff['handoff_id']}/acknowledge",
                              await member_of(stack, handoff["unit_id"]))
        assert response.is_success, response.text
    await eventually(lambda: events_on(stack.bootstrap, stack.prefix + ROUTING_HANDOFFS.name, breached),
                     lambda found: any(e.type == "IncidentEscalated" for e in found), timeout=60,
                     what="the ignored general incident breached and escalated")

    before_ids = await quiet(stack)
    await wait_consumed(stack)
    before_views = await views(stack, incidents)
    before_letters = {spec.name: len(await dead_letters(stack.bootstrap, spec, stack.prefix)) for spec in TOPICS}

    replayed = 0
    for spec in TOPICS:
        topic = stack.prefix + spec.name
        records = await records_from_start(stack.bootstrap, topic)
        await produce(stack.bootstrap, topic, [(r.partition, r.key, r.value) for r in records])
        replayed += len(records)
    assert replayed > 50, "too little to replay"

    await wait_consumed(stack, timeout=180)
    after_ids = await quiet(stack)
    assert after_ids == before_ids, {k: sorted(after_ids[k] - before_ids[k]) for k in after_ids}
    assert await views(stack, incidents) == before_views
    for spec in TOPICS:
        new_letters = (await dead_letters(stack.bootstrap, spec, stack.prefix))[before_letters[spec.name]:]
        # Replayed poison (from the test above) is dead-lettered again; a valid event never is.
        assert [decodable(r) for r in new_letters if decodable(r) is not None] == []


# --- 3. facts of one incident out of order ----------------------------------------------------


def envelope(event: Event, incident_id: str, source: str, at: datetime) -> Envelope:
    return make_envelope(event, source=source, subject=incident_id, occurred_at=at,
                         correlation_id=correlation_for(incident_id), policy_version="e2e-short-general")


def a_dispatch(incident_id: str, handoff_id: str, at: datetime, due_in: float = 4.0) -> HandoffDispatched:
    return HandoffDispatched(
        incident_id=incident_id, handoff_id=handoff_id, unit_id="U-POL-P0001", department="police", role="lead",
        category="noise", urgency="general", grid_id="G0001", dispatched_at=at,
        report_due_at=at + timedelta(seconds=due_in),
    )


async def valid_dead_letters(stack: Stack, ids: set[str]) -> list[str]:
    """Which of these valid events some group dead-lettered."""
    found = []
    for spec in TOPICS:
        for record in await dead_letters(stack.bootstrap, spec, stack.prefix):
            event = decodable(record)
            if event is not None and str(event.id) in ids:
                found.append(f"{header_map(record.headers).get(DLQ_CONSUMER)}: {event.type} {header_map(record.headers).get(HEADER_DLQ_REASON)}")
    return found


async def test_facts_out_of_order_reach_routing_and_sla_timer_without_breach_duplicate_or_dead_letter(stack: Stack):
    now = datetime.now(UTC)
    sent: list[Envelope] = []

    # sla_timer: the acknowledgement is consumed before the dispatch it acknowledges.
    acked_first, handoff_a = str(uuid.uuid4()), f"hf-{uuid.uuid4()}"
    ack = HandoffAcknowledged(incident_id=acked_first, handoff_id=handoff_a, unit_id="U-POL-P0001", actor_id="P0001",
                              acknowledged_at=now + timedelta(seconds=1))
    sent += [envelope(ack, acked_first, "routing", now + timedelta(seconds=1)),
             envelope(a_dispatch(acked_first, handoff_a, now), acked_first, "routing", now)]
    # routing: the reclassification is consumed before the classification it corrects.
    reclassified_first = str(uuid.uuid4())
    sent += [
        envelope(IncidentReclassified(incident_id=reclassified_first, grid_id="G0001", category="violence", urgency="urgent",
                                      previous_category="noise", previous_urgency="general", reason="现场有人受伤",
                                      actor_id="desk-S0101-1"), reclassified_first, "classification", now),
        envelope(IncidentClassified(incident_id=reclassified_first, grid_id="G0001", category="noise", urgency="general",
                                    priority=3, confidence=0.7, classifier_version="e2e"), reclassified_first,
                 "classification", now - timedelta(seconds=1)),
    ]
    # routing: a breach of a handoff routing never dispatched (its dispatch still to come, or lost).
    breached_first = str(uuid.uuid4())
    sent.append(envelope(DeadlineBreached(incident_id=breached_first, deadline_id=f"dl-hf-{breached_first}-report",
                                          handoff_id=f"hf-{breached_first}", kind="report", due_at=now, urgency="general",
                                          unit_id="U-POL-P0001", fired_at=now + timedelta(seconds=1)),
                         breached_first, "sla_timer", now))
    await publish(stack.bootstrap, stack.prefix, *sent)

    # sla_timer: the incident's closure is consumed (its own topic and group) before a dispatch of it.
    closed_first, handoff_c = str(uuid.uuid4()), f"hf-{uuid.uuid4()}"
    closure = envelope(IncidentClosed(incident_id=closed_first, outcome="resolved", closed_at=now), closed_first, "closure", now)
    await publish(stack.bootstrap, stack.prefix, closure)
    sla_closure_group = {g: t for g, t in groups_of(stack.prefix).items()
                         if "sla_timer" in g and t.endswith(CLOSURE_OUTCOMES.name)}
    await wait_consumed(stack, sla_closure_group)
    late_dispatch = envelope(a_dispatch(closed_first, handoff_c, datetime.now(UTC)), closed_first, "routing", datetime.now(UTC))
    await publish(stack.bootstrap, stack.prefix, late_dispatch)
    sent += [closure, late_dispatch]

    await wait_consumed(stack)
    await asyncio.sleep(10)  # past the 4 s report deadlines, for the scheduler and the relays
    await wait_consumed(stack)

    deadlines = await events_on(stack.bootstrap, stack.prefix + SLA_DEADLINES.name)
    of = lambda incident: [e for e in deadlines if e.subject == incident]  # noqa: E731
    assert not [e for e in of(acked_first) if e.type == "DeadlineBreached"], "breached a handoff acknowledged before due"
    assert not [e for e in of(acked_first) if e.type == "DeadlineArmed" and e.data.kind.value == "report"]
    shown = await get_json(stack, "sla_timer", f"/api/v1/deadlines?incident_id={acked_first}")
    report_clock = [d for d in shown if d.get("kind") == "report"] if isinstance(shown, list) else shown
    assert [d["state"] for d in report_clock] == ["cancelled"], shown
    assert of(closed_first) == [], "a dispatch of a closed incident armed a deadline"

    dispatched = [e for e in await events_on(stack.bootstrap, stack.prefix + ROUTING_HANDOFFS.name, reclassified_first)
                  if e.type == "HandoffDispatched"]
    assert dispatched, "routing dispatched nothing for the reclassified incident"
    units = Counter((e.data.unit_id, e.data.role) for e in dispatched)
    assert max(units.values()) == 1, f"a unit was summoned twice: {units}"
    assert {e.data.category.value for e in dispatched} == {"violence"}, "the stale classification was dispatched"
    assert {e.data.urgency.value for e in dispatched} == {"urgent"}

    escalations = [e for e in await events_on(stack.bootstrap, stack.prefix + ROUTING_HANDOFFS.name, breached_first)]
    assert escalations == [], "a breach of an unknown handoff escalated"

    assert await valid_dead_letters(stack, {str(e.id) for e in sent}) == []
