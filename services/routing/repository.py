"""Routing state: incidents as routing sees them, every handoff, and the audit log of commands."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Column, Index, Integer, MetaData, String, Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.reference import VERSION_MAX_LENGTH
from contracts.vocabulary import Category, DeclineReason, Disposition, HandoffRole, HandoffState, Urgency
from services.routing.domain import OPEN_STATES, Handoff
from services.runtime.db import Serial, UTCDateTime, insert_ignoring_conflicts

metadata = MetaData()

incidents = Table(
    "incidents",
    metadata,
    Column("incident_id", String(64), primary_key=True),
    Column("grid_id", String(64), nullable=False),
    Column("category", String(40), nullable=False),
    Column("urgency", String(16), nullable=False),
    Column("closed_at", UTCDateTime, nullable=True),
    Column("reopen_count", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

handoffs = Table(
    "handoffs",
    metadata,
    Column("handoff_id", String(36), primary_key=True),
    Column("incident_id", String(64), nullable=False, index=True),
    Column("unit_id", String(64), nullable=False),
    Column("department", String(40), nullable=False),
    Column("role", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("category", String(40), nullable=False),
    Column("urgency", String(16), nullable=False),
    Column("grid_id", String(64), nullable=False),
    Column("dispatched_at", UTCDateTime, nullable=False),
    Column("report_due_at", UTCDateTime, nullable=False),
    Column("escalation_level", Integer, nullable=False),
    Column("escalation_repeat", Integer, nullable=False),
    Column("bounce_count", Integer, nullable=False),
    Column("replaces_handoff_id", String(36), nullable=True),
    Column("chain_root_id", String(36), nullable=True, index=True),
    Column("acknowledged_at", UTCDateTime, nullable=True),
    Column("acknowledged_by", String(64), nullable=True),
    Column("late", Boolean, nullable=False),
    Column("on_scene_at", UTCDateTime, nullable=True),
    Column("on_scene_by", String(64), nullable=True),
    Column("resolved_at", UTCDateTime, nullable=True),
    Column("resolved_by", String(64), nullable=True),
    Column("disposition", String(32), nullable=True),
    Column("note", String(2000), nullable=False),
    Column("declined_reason", String(40), nullable=True),
    Column("successor_handoff_id", String(36), nullable=True),
    Column("ended_at", UTCDateTime, nullable=True),
    # The reference data and roster versions that chose the unit (NULL for rows from before they were kept).
    Column("reference_version", String(VERSION_MAX_LENGTH), nullable=True),
    Column("roster_version", String(VERSION_MAX_LENGTH), nullable=True),
)
# A unit's queue: its open handoffs, soonest breach first.
Index("ix_handoffs_unit_queue", handoffs.c.unit_id, handoffs.c.state, handoffs.c.report_due_at)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("handoff", String(36), nullable=False, index=True),
    Column("allowed", Boolean, nullable=False),
    Column("reason", String(500), nullable=False),
)

_ENUMS = {
    "role": HandoffRole,
    "state": HandoffState,
    "category": Category,
    "urgency": Urgency,
    "disposition": Disposition,
    "declined_reason": DeclineReason,
}
_FIELDS = [f.name for f in fields(Handoff)]


def to_handoff(row: Any) -> Handoff:
    """A domain Handoff from a table row."""
    values = {name: getattr(row, name) for name in _FIELDS}
    for name, enum in _ENUMS.items():
        if values[name] is not None:
            values[name] = enum(values[name])
    return Handoff(**values)


def _to_row(handoff: Handoff) -> dict[str, Any]:
    row = asdict(handoff)
    for name in _ENUMS:
        if row[name] is not None:
            row[name] = row[name].value
    return row


async def add_incident(conn: AsyncConnection, **row: Any) -> bool:
    """Remember a newly classified incident; False if routing already knows it."""
    result = await conn.execute(insert_ignoring_conflicts(conn, incidents).values(reopen_count=0, **row))
    return result.rowcount == 1


async def get_incident(conn: AsyncConnection, incident_id: str, *, for_update: bool = False) -> Any | None:
    """Routing's view of an incident, or None."""
    query = select(incidents).where(incidents.c.incident_id == incident_id)
    if for_update:
        query = query.with_for_update()
    return (await conn.execute(query)).first()


async def update_incident(conn: AsyncConnection, incident_id: str, **values: Any) -> None:
    """Change routing's view of an incident."""
    await conn.execute(incidents.update().where(incidents.c.incident_id == incident_id).values(**values))


async def insert_handoff(conn: AsyncConnection, handoff: Handoff) -> bool:
    """Store a new handoff; False if that id exists (a redelivered cause)."""
    result = await conn.execute(insert_ignoring_conflicts(conn, handoffs).values(**_to_row(handoff)))
    return result.rowcount == 1


async def save_handoff(conn: AsyncConnection, handoff: Handoff) -> None:
    """Overwrite a handoff's state."""
    row = _to_row(handoff)
    await conn.execute(handoffs.update().where(handoffs.c.handoff_id == handoff.handoff_id).values(**row))


async def get_handoff(conn: AsyncConnection, handoff_id: str, *, for_update: bool = False) -> Handoff | None:
    """A handoff by id, or None (locked for the transaction when asked, on PostgreSQL)."""
    query = select(handoffs).where(handoffs.c.handoff_id == handoff_id)
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return to_handoff(row) if row else None


async def incident_handoffs(conn: AsyncConnection, incident_id: str) -> list[Handoff]:
    """Every handoff of an incident, in dispatch order."""
    query = (
        select(handoffs)
        .where(handoffs.c.incident_id == incident_id)
        .order_by(handoffs.c.dispatched_at, handoffs.c.escalation_level, handoffs.c.role, handoffs.c.unit_id)
    )
    return [to_handoff(r) for r in (await conn.execute(query)).all()]


async def chain_unit_ids(conn: AsyncConnection, root_id: str) -> set[str]:
    """Units already tried in a chain of re-routes (so a decline never returns to them)."""
    query = select(handoffs.c.unit_id).where(
        (handoffs.c.chain_root_id == root_id) | (handoffs.c.handoff_id == root_id)
    )
    return set((await conn.execute(query)).scalars().all())


async def open_escalations(conn: AsyncConnection, root_id: str) -> list[Handoff]:
    """Open escalation handoffs raised because a handoff of this chain missed its deadline."""
    query = select(handoffs).where(
        handoffs.c.chain_root_id == root_id,
        handoffs.c.role == HandoffRole.ESCALATION.value,
        handoffs.c.state.in_([s.value for s in OPEN_STATES]),
    )
    return [to_handoff(r) for r in (await conn.execute(query)).all()]


async def chain_escalation_level(conn: AsyncConnection, root_id: str) -> int:
    """The highest escalation rung ever raised for a chain (0: none), so the ladder only climbs."""
    query = select(func.max(handoffs.c.escalation_level)).where(
        handoffs.c.chain_root_id == root_id, handoffs.c.role == HandoffRole.ESCALATION.value
    )
    return (await conn.execute(query)).scalar() or 0


async def unit_queue(conn: AsyncConnection, unit_id: str, limit: int = 200) -> list[Handoff]:
    """A unit's open handoffs, soonest report deadline first."""
    return await units_queue(conn, [unit_id], limit)


async def units_queue(conn: AsyncConnection, unit_ids: Collection[str], limit: int = 200) -> list[Handoff]:
    """The open handoffs of a set of units (a department, a command centre), soonest report deadline first."""
    query = (
        select(handoffs)
        .where(handoffs.c.unit_id.in_(list(unit_ids)), handoffs.c.state.in_([s.value for s in OPEN_STATES]))
        .order_by(handoffs.c.report_due_at, handoffs.c.handoff_id)
        .limit(limit)
    )
    return [to_handoff(r) for r in (await conn.execute(query)).all()]


async def audit(
    conn: AsyncConnection, *, at: datetime, actor: str, action: str, handoff: str, allowed: bool, reason: str
) -> None:
    """Append one audit row for a command attempt."""
    await conn.execute(
        audit_log.insert().values(at=at, actor=actor, action=action, handoff=handoff, allowed=allowed, reason=reason[:500])
    )


async def audit_rows(conn: AsyncConnection, handoff_id: str) -> list[Any]:
    """The audit trail of one handoff, oldest first."""
    query = select(audit_log).where(audit_log.c.handoff == handoff_id).order_by(audit_log.c.id)
    return list((await conn.execute(query)).all())
