"""Closure state: one row per incident, its handoff facts, and the append-only hash-chained timeline."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Column, Integer, MetaData, String, Table, Text, select
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.envelope import Envelope
from contracts.vocabulary import Category, ClosureOutcome, Disposition, HandoffRole, Satisfaction, Urgency
from services.closure.domain import (
    ChainHead,
    ClosureStatus,
    HandoffRecord,
    IncidentClosure,
    TimelineEntry,
    Withdrawal,
    next_entry,
    summarise,
)
from services.runtime.db import UTCDateTime, insert_ignoring_conflicts

metadata = MetaData()

closures = Table(
    "closures",
    metadata,
    Column("incident_id", String(64), primary_key=True),
    Column("grid_id", String(64)),
    Column("reporter_id", String(64)),
    Column("category", String(40)),
    Column("urgency", String(16)),
    Column("status", String(32), nullable=False),
    Column("reopen_count", Integer, nullable=False),
    Column("disposition", String(32)),
    Column("resolved_at", UTCDateTime),
    Column("verified_by", String(64)),
    Column("verified_at", UTCDateTime),
    Column("outcome", String(32)),
    Column("satisfaction", String(32)),
    Column("escalated", Boolean, nullable=False),
    Column("closed_at", UTCDateTime),
    Column("last_command", Text),
    Column("handoffs_seen", Integer, nullable=False),
)

handoffs = Table(
    "handoffs",
    metadata,
    Column("incident_id", String(64), primary_key=True),
    Column("handoff_id", String(64), primary_key=True),
    Column("role", String(32)),
    Column("unit_id", String(64)),
    Column("department", String(64)),
    Column("dispatched_at", UTCDateTime),
    Column("seen_order", Integer, nullable=False),
    Column("disposition", String(32)),
    Column("resolved_at", UTCDateTime),
    Column("resolved_round", Integer),
    Column("withdrawal", String(32)),
)

timeline = Table(
    "timeline",
    metadata,
    Column("incident_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("summary", JSON, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

# The anchor of each chain: written with every append, so cutting entries off the end shows.
timeline_heads = Table(
    "timeline_heads",
    metadata,
    Column("incident_id", String(64), primary_key=True),
    Column("length", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)

_ENUM_COLUMNS = {
    "category": Category,
    "urgency": Urgency,
    "status": ClosureStatus,
    "disposition": Disposition,
    "outcome": ClosureOutcome,
    "satisfaction": Satisfaction,
    "role": HandoffRole,
    "withdrawal": Withdrawal,
}


def _from_row(mapping: Any, columns: Any) -> dict[str, Any]:
    values = {}
    for column in columns:
        value = mapping[column.name]
        enum = _ENUM_COLUMNS.get(column.name)
        values[column.name] = enum(value) if enum and value is not None else value
    return values


def _to_row(values: dict[str, Any], columns: Any) -> dict[str, Any]:
    return {c.name: values[c.name] for c in columns}


async def lock_closure(conn: AsyncConnection, incident_id: str) -> IncidentClosure:
    """Load (creating if new) an incident's closure, holding its row lock until the transaction ends."""
    fresh = IncidentClosure(incident_id)
    await conn.execute(insert_ignoring_conflicts(conn, closures).values(**_to_row(vars(fresh), closures.columns)))
    # The row lock serialises the consumers and HTTP commands of one incident on PostgreSQL, so
    # two transactions never both extend the timeline from the same last entry; SQLite already
    # serialises writers with BEGIN IMMEDIATE.
    closure = await find_closure(conn, incident_id, for_update=True)
    assert closure is not None
    return closure


async def find_closure(conn: AsyncConnection, incident_id: str, *, for_update: bool = False) -> IncidentClosure | None:
    """An incident's closure (row-locked if `for_update`), or None if closure never heard of it."""
    query = select(closures).where(closures.c.incident_id == incident_id)
    row = (await conn.execute(query.with_for_update() if for_update else query)).first()
    if row is None:
        return None
    closure = IncidentClosure(**_from_row(row._mapping, closures.columns))
    rows = (await conn.execute(select(handoffs).where(handoffs.c.incident_id == incident_id))).all()
    for handoff_row in rows:
        values = _from_row(handoff_row._mapping, handoffs.columns)
        del values["incident_id"]
        closure.handoffs[values["handoff_id"]] = HandoffRecord(**values)
    return closure


async def save_closure(conn: AsyncConnection, closure: IncidentClosure) -> None:
    """Write the closure row and its handoff facts (the aggregate is small: rewrite its handoffs)."""
    row = _to_row(vars(closure), closures.columns)
    await conn.execute(closures.update().where(closures.c.incident_id == closure.incident_id).values(**row))
    await conn.execute(handoffs.delete().where(handoffs.c.incident_id == closure.incident_id))
    if closure.handoffs:
        await conn.execute(
            handoffs.insert(),
            [_to_row({**vars(h), "incident_id": closure.incident_id}, handoffs.columns) for h in closure.handoffs.values()],
        )


async def append_to_timeline(conn: AsyncConnection, incident_id: str, envelopes: list[Envelope]) -> None:
    """Append one chained entry per envelope, in order, after the incident's last entry; move the head."""
    previous = await _last_entry(conn, incident_id)
    for envelope in envelopes:
        previous = next_entry(
            previous,
            incident_id=incident_id,
            at=envelope.occurred_at,
            event_type=envelope.type,
            event_id=str(envelope.id),
            summary=summarise(envelope.data),
        )
        await conn.execute(timeline.insert().values(**vars(previous)))
    if previous is not None:
        await conn.execute(
            insert_ignoring_conflicts(conn, timeline_heads).values(incident_id=incident_id, length=0, hash="")
        )
        await conn.execute(
            timeline_heads.update()
            .where(timeline_heads.c.incident_id == incident_id)
            .values(length=previous.seq, hash=previous.hash)
        )


async def _last_entry(conn: AsyncConnection, incident_id: str) -> TimelineEntry | None:
    row = (
        await conn.execute(
            select(timeline).where(timeline.c.incident_id == incident_id).order_by(timeline.c.seq.desc()).limit(1)
        )
    ).first()
    return TimelineEntry(**row._mapping) if row else None


async def timeline_of(conn: AsyncConnection, incident_id: str) -> list[TimelineEntry]:
    """An incident's timeline in seq order."""
    rows = (
        await conn.execute(select(timeline).where(timeline.c.incident_id == incident_id).order_by(timeline.c.seq))
    ).all()
    return [TimelineEntry(**row._mapping) for row in rows]


async def head_of_timeline(conn: AsyncConnection, incident_id: str) -> ChainHead | None:
    """The anchored head of an incident's chain, or None when it has none."""
    row = (await conn.execute(select(timeline_heads).where(timeline_heads.c.incident_id == incident_id))).first()
    return ChainHead(**row._mapping) if row else None


async def incidents_with_timeline(conn: AsyncConnection) -> list[str]:
    """Every incident id that has timeline entries or an anchored head (whose entries may all be gone)."""
    query = select(timeline.c.incident_id).union(select(timeline_heads.c.incident_id))
    return sorted((await conn.execute(query)).scalars())
