"""The KPI projection's tables: facts per incident, handoff, feedback and breach (every clock kind).

Rows are keyed by natural ids (incident, handoff, FeedbackGiven event id, deadline id) and merged
with the pure functions of `kpi.py`, so recording the same event twice, or events in another
order, leaves the same facts. The live consumers and the rebuild both write through
`record_fact`.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from sqlalchemy import Column, Integer, String, Table, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.envelope import Envelope
from services.closure.kpi import (
    HANDOFF_EVENTS,
    INCIDENT_EVENTS,
    BreachFact,
    withdrawn_breach,
    FeedbackFact,
    HandoffFact,
    IncidentFact,
    KpiFacts,
    merge_into_handoff,
    merge_into_incident,
    standalone_fact,
)
from services.closure.repository import metadata
from services.runtime.db import UTCDateTime, insert_ignoring_conflicts

kpi_incidents = Table(
    "kpi_incidents",
    metadata,
    Column("incident_id", String(64), primary_key=True),
    Column("grid_id", String(64)),
    Column("category", String(40)),
    Column("reported_at", UTCDateTime),
    Column("resolved_at", UTCDateTime),
    Column("reopen_count", Integer, nullable=False, default=0),
    Column("outcome", String(32)),
    Column("closed_at", UTCDateTime),
)

kpi_handoffs = Table(
    "kpi_handoffs",
    metadata,
    Column("handoff_id", String(64), primary_key=True),
    Column("incident_id", String(64), nullable=False, index=True),
    Column("unit_id", String(64)),
    Column("department", String(64)),
    Column("role", String(32)),
    Column("category", String(40)),
    Column("grid_id", String(64)),
    Column("dispatched_at", UTCDateTime, index=True),
    Column("report_due_at", UTCDateTime),
    Column("acknowledged_at", UTCDateTime),
    Column("declined_at", UTCDateTime),
    Column("withdrawn_at", UTCDateTime),
    Column("disposition", String(32)),
    Column("resolved_at", UTCDateTime),
)

kpi_feedback = Table(
    "kpi_feedback",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("incident_id", String(64), nullable=False, index=True),
    Column("satisfaction", String(32), nullable=False),
)

kpi_breaches = Table(
    "kpi_breaches",
    metadata,
    Column("deadline_id", String(64), primary_key=True),
    Column("incident_id", String(64), nullable=False, index=True),
    Column("handoff_id", String(64)),
    Column("unit_id", String(64)),
    Column("due_at", UTCDateTime, nullable=False),
    # Rows from before breaches of every clock kind were recorded are report breaches.
    Column("kind", String(20), nullable=False, server_default="report"),
)

KPI_TABLES = (kpi_incidents, kpi_handoffs, kpi_feedback, kpi_breaches)

async def record_fact(conn: AsyncConnection, envelope: Envelope) -> None:
    """Merge one event into the KPI facts (idempotent; events of other types are ignored)."""
    event = envelope.data
    standalone = standalone_fact(envelope)
    if standalone is not None:
        table = kpi_feedback if isinstance(standalone, FeedbackFact) else kpi_breaches
        await conn.execute(insert_ignoring_conflicts(conn, table).values(**asdict(standalone)))
    withdrawn = withdrawn_breach(envelope)
    if withdrawn is not None:
        # Same partition as the breach and after it, so the breach row is already here.
        await conn.execute(delete(kpi_breaches).where(kpi_breaches.c.deadline_id == withdrawn))
    if isinstance(event, INCIDENT_EVENTS):
        incident = await _locked(conn, kpi_incidents, IncidentFact(event.incident_id))
        await _save(conn, kpi_incidents, merge_into_incident(incident, event))
    if isinstance(event, HANDOFF_EVENTS):
        handoff = await _locked(conn, kpi_handoffs, HandoffFact(event.handoff_id, event.incident_id))
        await _save(conn, kpi_handoffs, merge_into_handoff(handoff, event, envelope.occurred_at))


async def _locked(conn: AsyncConnection, table: Table, fresh: Any) -> Any:
    """Load a fact row (creating it if new) under a row lock: three consumer groups merge into it."""
    key = table.primary_key.columns[0]
    await conn.execute(insert_ignoring_conflicts(conn, table).values(**asdict(fresh)))
    row = (await conn.execute(select(table).where(key == getattr(fresh, key.name)).with_for_update())).one()
    return type(fresh)(**row._mapping)


async def _save(conn: AsyncConnection, table: Table, fact: Any) -> None:
    key = table.primary_key.columns[0]
    await conn.execute(table.update().where(key == getattr(fact, key.name)).values(**asdict(fact)))


async def load_facts(conn: AsyncConnection) -> KpiFacts:
    """Every KPI fact in the store."""

    async def rows(table: Table, kind: type) -> list[Any]:
        names = [f.name for f in fields(kind)]
        result = await conn.execute(select(*(table.c[n] for n in names)))
        return [kind(**row._mapping) for row in result]

    return KpiFacts(
        incidents=await rows(kpi_incidents, IncidentFact),
        handoffs=await rows(kpi_handoffs, HandoffFact),
        feedback=await rows(kpi_feedback, FeedbackFact),
        breaches=await rows(kpi_breaches, BreachFact),
    )


async def count_facts(conn: AsyncConnection) -> int:
    """How many fact rows the store holds (0 for a fresh store)."""
    total = 0
    for table in KPI_TABLES:
        total += (await conn.execute(select(func.count()).select_from(table))).scalar_one()
    return total


async def clear_facts(conn: AsyncConnection) -> None:
    """Delete every KPI fact (before a rebuild replaces them)."""
    for table in KPI_TABLES:
        await conn.execute(delete(table))
