"""Harness (no tests) for the SLA timer component tests: the real app on SQLite, FastStream's in-memory broker, a FakeClock."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from faststream.kafka import TestKafkaBroker
from sqlalchemy import select

from contracts.envelope import Envelope, correlation_for, make_envelope
from contracts.events import (
    CATALOGUE,
    Event,
    HandoffAcknowledged,
    HandoffDispatched,
    IncidentClosed,
)
from contracts.topics import topic_for_event
from contracts.vocabulary import Category, ClosureOutcome, DeadlineKind, HandoffRole, Urgency
from services.runtime.clock import FakeClock
from services.sla_timer.app import create_app
from services.sla_timer.domain import deadline_id
from services.sla_timer.settings import SlaTimerSettings
from tests.support import SignedAsActor

MS = timedelta(milliseconds=1)
URGENT_REPORT = timedelta(minutes=15)
# A community police unit of the demo city and one of its members (the assignee).
ASSIGNEE_UNIT = "U-POL-P0001"
ASSIGNEE_MEMBER = "P0001"


@dataclass
class SlaTimer:
    """One running SLA timer app and the means to drive and observe it."""

    app: Any
    clock: FakeClock
    http: httpx.AsyncClient

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime

    async def publish(self, event: Event, *, incident_id: str) -> Envelope:
        """Deliver an event to the service as its producer would."""
        envelope = make_envelope(
            event,
            source="test",
            subject=incident_id,
            occurred_at=self.clock.now(),
            correlation_id=correlation_for(incident_id),
        )
        await self.deliver(envelope)
        return envelope

    async def deliver(self, envelope: Envelope) -> None:
        """Deliver one exact envelope (the same one twice is a redelivery)."""
        topic = self.runtime.topic(topic_for_event(envelope.type))
        await self.runtime.broker.publish(envelope.encode(), topic, key=envelope.key(), headers=envelope.headers())

    async def fire_due(self) -> int:
        """Run the scheduler's core once at the clock's current instant."""
        return await self.app.state.fire_due(self.clock.now())

    async def emitted(self, *types: str) -> list[Envelope]:
        """Events staged in the outbox, in order, optionally only of the given types."""
        outbox = self.runtime.tables[0]
        async with self.runtime.engine.connect() as conn:
            rows = (await conn.execute(select(outbox.c.payload).order_by(outbox.c.id))).all()
        events = [CATALOGUE.decode(bytes(r.payload)) for r in rows]
        return [e for e in events if not types or e.type in types]

    async def deadline(self, handoff_id: str, kind: DeadlineKind = DeadlineKind.REPORT) -> dict | None:
        """The deadline as the HTTP API shows it, or None."""
        response = await self.http.get(f"/api/v1/deadlines/{deadline_id(handoff_id, kind)}")
        return response.json() if response.status_code == 200 else None

    async def set_source(self, handoff_id: str, *, partition: int, kind: DeadlineKind = DeadlineKind.REPORT) -> None:
        """Pretend a clock was armed from another partition (the in-memory broker has only one)."""
        from services.sla_timer.repository import deadlines

        async with self.runtime.engine.begin() as conn:
            await conn.execute(
                deadlines.update().where(deadlines.c.id == deadline_id(handoff_id, kind)).values(source_partition=partition)
            )


def settings_for(database: Path, **overrides: Any) -> SlaTimerSettings:
    """Settings of an app on a SQLite file, with the scheduler loop off unless asked for."""
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{database}",
        "scheduler_enabled": False,
        # The in-memory broker runs a handler inside publish: the view is always complete.
        "wait_for_consumed_view": False,
        "log_json": False,
        "log_level": "WARNING",
        "outbox_poll_seconds": 0.05,
    }
    values.update(overrides)
    return SlaTimerSettings(**values)


@asynccontextmanager
async def running(settings: SlaTimerSettings, clock: FakeClock) -> AsyncIterator[SlaTimer]:
    """Start the app under TestKafkaBroker and yield the harness; stop it after."""
    app = create_app(settings, clock)
    async with TestKafkaBroker(app.state.runtime.broker):
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://sla", auth=SignedAsActor(app)) as http:
                yield SlaTimer(app, clock, http)


def new_ids() -> tuple[str, str]:
    """A fresh (incident id, handoff id)."""
    return str(uuid.uuid4()), str(uuid.uuid4())


def dispatched(
    incident_id: str,
    handoff_id: str,
    at: datetime,
    *,
    urgency: Urgency = Urgency.URGENT,
    report_due_at: datetime | None = None,
    unit_id: str = ASSIGNEE_UNIT,
) -> HandoffDispatched:
    """A HandoffDispatched whose report clock started at `at`."""
    return HandoffDispatched(
        incident_id=incident_id,
        handoff_id=handoff_id,
        unit_id=unit_id,
        department="police",
        role=HandoffRole.LEAD,
        category=Category.VIOLENCE if urgency is Urgency.URGENT else Category.NOISE,
        urgency=urgency,
        grid_id="G0001",
        dispatched_at=at,
        report_due_at=report_due_at or at + (URGENT_REPORT if urgency is Urgency.URGENT else timedelta(hours=2)),
    )


def acknowledged(incident_id: str, handoff_id: str, at: datetime, unit_id: str = ASSIGNEE_UNIT) -> HandoffAcknowledged:
    """A HandoffAcknowledged (报到) stamped `at`."""
    return HandoffAcknowledged(
        incident_id=incident_id, handoff_id=handoff_id, unit_id=unit_id, actor_id="officer-x", acknowledged_at=at
    )


def closed(incident_id: str, at: datetime) -> IncidentClosed:
    """An IncidentClosed."""
    return IncidentClosed(incident_id=incident_id, outcome=ClosureOutcome.RESOLVED, closed_at=at)


async def eventually(predicate: Any, timeout: float = 5.0) -> None:
    """Poll an async predicate until it holds, or fail after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await predicate():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
