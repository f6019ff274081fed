"""Test helpers shared by the suites: envelopes, in-memory service apps, polling."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI
from faststream.kafka import TestKafkaBroker
from sqlalchemy import select

from contracts.envelope import Envelope, Event, correlation_for, make_envelope
from contracts.events import CATALOGUE, IncidentReported, Location
from contracts.reference import ReferenceData, demo_city
from contracts.topics import topic_for_event
from services.runtime.audit import audit_rows as _audit_rows
from services.runtime.auth import Principal, TokenCodec, resolve_principal
from services.runtime.clock import Clock
from services.runtime.settings import DEV_TOKEN_SECRET


def reported(
    description: str = "楼下有人打架，有人流血",
    *,
    incident_id: str | None = None,
    grid_id: str = "G0001",
    at: datetime | None = None,
) -> Envelope:
    """An IncidentReported envelope as intake would emit it."""
    incident_id = incident_id or str(uuid.uuid4())
    at = at or datetime.now(UTC)
    return envelope_for(
        IncidentReported(
            incident_id=incident_id,
            grid_id=grid_id,
            reporter_id="W0001",
            description=description,
            location=Location(address="测试路1号"),
            reported_at=at,
        ),
        incident_id,
        at=at,
    )


def envelope_for(event: Event, incident_id: str, *, at: datetime | None = None, source: str = "test") -> Envelope:
    """Wrap an event for an incident with the incident's correlation id."""
    return make_envelope(
        event,
        source=source,
        subject=incident_id,
        occurred_at=at or datetime.now(UTC),
        correlation_id=correlation_for(incident_id),
    )


async def publish(app: FastAPI, envelope: Envelope, *, prefix: str = "") -> None:
    """Publish an envelope on its catalogue topic through the app's (in-memory) broker."""
    runtime = app.state.runtime
    topic = prefix + topic_for_event(envelope.type).name
    await runtime.broker.publish(envelope.encode(), topic, key=envelope.key(), headers=envelope.headers())


async def outbox_envelopes(app: FastAPI) -> list[Envelope]:
    """Every envelope the app has staged in its outbox, in order."""
    runtime = app.state.runtime
    outbox = runtime.tables[0]
    async with runtime.engine.connect() as conn:
        rows = (await conn.execute(select(outbox.c.payload).order_by(outbox.c.id))).all()
    return [CATALOGUE.decode(bytes(r.payload)) for r in rows]


async def wait_for(check: Callable[[], Awaitable[Any]], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll an async predicate until it returns something truthy, or fail after `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@asynccontextmanager
async def running(app: FastAPI, *, user: str | None = None, signed: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """Start an app on FastStream's in-memory broker and give an HTTP client for it.

    The client signs each request in as the actor its JSON body names (`actor_id`, else
    `reporter_id`), else as `user` (default: admin), unless the request sets Authorization
    itself. With `signed=False` it sends only what each request carries (the access tests).
    """
    async with TestKafkaBroker(app.state.runtime.broker):
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            auth = SignedAsActor(app, default=user or "admin") if signed else None
            async with httpx.AsyncClient(transport=transport, base_url="http://test", auth=auth) as client:
                yield client


class SignedAsActor(httpx.Auth):
    """Test plumbing: a bearer token for the user a request's JSON body names as its actor."""

    requires_request_body = True

    def __init__(self, app: FastAPI, default: str | None = "admin") -> None:
        self.app = app
        self.default = default

    def auth_flow(self, request: httpx.Request):  # noqa: ANN201 - httpx's generator protocol
        if "authorization" not in request.headers:
            user = _named_actor(request) or self.default
            if user:
                request.headers["Authorization"] = f"Bearer {token_for(self.app, user)}"
        yield request


def _named_actor(request: httpx.Request) -> str | None:
    if not request.content or "json" not in request.headers.get("content-type", ""):
        return None
    try:
        body = json.loads(request.content)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    actor = body.get("actor_id") or body.get("reporter_id")
    return actor if isinstance(actor, str) else None


# --- access: tokens for the demo users ----------------------------------------------------------


def principal_of(user_id: str, city: ReferenceData | None = None, *, supervisors=("sup-1",), admins=("admin",)) -> Principal:
    """The principal a demo user id stands for (an AssertionError for an unknown one)."""
    principal = resolve_principal(user_id, city or demo_city(), supervisors=supervisors, admins=admins)
    assert principal is not None, f"{user_id} is no user of the reference data"
    return principal


def mint_token(
    user: str | Principal,
    *,
    secret: str = DEV_TOKEN_SECRET,
    clock: Clock | None = None,
    ttl_seconds: int = 3600,
    city: ReferenceData | None = None,
) -> str:
    """A bearer token for a demo user (or any principal), signed with `secret`, issued at `clock`'s now."""
    principal = user if isinstance(user, Principal) else principal_of(user, city)
    return TokenCodec(secret, ttl_seconds=ttl_seconds, clock=clock).issue(principal)


def token_for(app: FastAPI, user: str | Principal, *, ttl_seconds: int = 3600, issued_at: datetime | None = None) -> str:
    """A token the app accepts (unless issued too long ago): its secret, clock, reference data, supervisors, admins."""
    runtime = app.state.runtime
    settings = runtime.settings
    if not isinstance(user, Principal):
        user = principal_of(user, runtime.areas.city, supervisors=settings.auth_supervisors, admins=settings.auth_admins)
    return runtime.auth.codec.issue(user, ttl_seconds=ttl_seconds, now=issued_at)


def as_user(app: FastAPI, user: str | Principal, **options: Any) -> dict[str, str]:
    """Authorization headers for a request to `app` as `user`."""
    return {"Authorization": f"Bearer {token_for(app, user, **options)}"}


def bearer(token: str) -> dict[str, str]:
    """Authorization headers carrying `token`."""
    return {"Authorization": f"Bearer {token}"}


async def audit_rows(app: FastAPI, target: str | None = None) -> list[dict[str, Any]]:
    """The app's access audit rows (of one target, e.g. "handoff:<id>"), oldest first."""
    runtime = app.state.runtime
    async with runtime.engine.connect() as conn:
        return await _audit_rows(conn, runtime.audit.table, target)


def ops_tool(name: str) -> str:
    """Path of an operations tool (promtool, kustomize, kubeconform) from `make ops-tools` or PATH."""
    import shutil
    from pathlib import Path

    from tests._infra import unavailable

    local = Path(__file__).resolve().parent.parent / ".cache" / "tools" / "bin" / name
    found = str(local) if local.is_file() else shutil.which(name)
    if found is None:
        unavailable(f"{name} is not installed (run `make ops-tools`)")
    return found


def pids_mentioning(fragment: str) -> list[int]:
    """Every live process whose command line mentions `fragment` (a data dir, a run dir)."""
    from pathlib import Path

    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fragment in cmdline:
            pids.append(int(proc.name))
    return pids


async def records_from_start(bootstrap: str, topic: str) -> list[Any]:
    """Every record of a topic from offset zero to its end when called, undecoded, in partition order.

    Read without a consumer group (nothing committed), with room for records near the broker's
    size limit; records produced after the call are left out, so the answer is a snapshot.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_bytes=8 * 1024 * 1024)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - first metadata fetch is lazy
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records: list[Any] = []
        while any([(await consumer.position(tp)) < end[tp] for tp in partitions]):
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                records += [r for r in batch if r.offset < end[TopicPartition(r.topic, r.partition)]]
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()
