"""The console's own read model: incidents, handoffs, timeline and the change log the live stream reads.

Facts of one incident arrive on five topics in no guaranteed order across topics (a handoff's
breach can be consumed before its dispatch), so every write creates the row it touches if it is
missing and only sets the columns the fact knows about.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    or_,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from services.runtime.db import Serial, UTCDateTime, insert_ignoring_conflicts

metadata = MetaData()

incidents = Table(
    "console_incidents",
    metadata,
    Column("incident_id", String(64), primary_key=True),
    Column("grid_id", String(64)),
    Column("district_id", String(32), index=True),
    Column("station_id", String(32), index=True),
    Column("reporter_id", String(64), index=True),
    Column("description", Text),
    Column("address", String(300)),
    Column("category", String(40)),
    Column("urgency", String(16)),
    Column("needs_review", Boolean, nullable=False, default=False),
    Column("reported_at", UTCDateTime),
    Column("escalation_level", Integer, nullable=False, default=0),
    Column("reopen_count", Integer, nullable=False, default=0),
    # When the reopen cap was spent and the district command centre took the lead.
    Column("command_centre_at", UTCDateTime),
    Column("duplicate_of", String(64)),
    Column("resolved_at", UTCDateTime),
    Column("verified_at", UTCDateTime),
    Column("closed_at", UTCDateTime, index=True),
    Column("outcome", String(32)),
    Column("satisfaction", String(32)),
    Column("updated_at", UTCDateTime, nullable=False),
)

handoffs = Table(
    "console_handoffs",
    metadata,
    Column("handoff_id", String(64), primary_key=True),
    Column("incident_id", String(64), nullable=False, index=True),
    Column("unit_id", String(64), index=True),
    Column("department", String(40)),
    Column("role", String(20)),
    Column("state", String(20)),
    Column("escalation_level", Integer, nullable=False, default=0),
    Column("dispatched_at", UTCDateTime),
    Column("report_due_at", UTCDateTime),
    Column("acknowledged_at", UTCDateTime),
    Column("acknowledged_by", String(64)),
    Column("late", Boolean, nullable=False, default=False),
    Column("warned", Boolean, nullable=False, default=False),
    Column("breached", Boolean, nullable=False, default=False),
    Column("breached_at", UTCDateTime),
    Column("paused", Boolean, nullable=False, default=False),
    Column("on_scene_at", UTCDateTime),
    Column("resolved_at", UTCDateTime),
    Column("disposition", String(32)),
    Column("decline_reason", String(40)),
    Column("successor_handoff_id", String(64)),
)

timeline = Table(
    "console_timeline",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("incident_id", String(64), nullable=False, index=True),
    Column("at", UTCDateTime, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("detail", JSON, nullable=False),
)

# The live stream's source: one row per applied fact; `seq` is the SSE event id.
changes = Table(
    "console_changes",
    metadata,
    Column("seq", Serial, primary_key=True, autoincrement=True),
    Column("incident_id", String(64), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("at", UTCDateTime, nullable=False),
)
Index("ix_console_handoffs_open", handoffs.c.incident_id, handoffs.c.state)

_CHANGE_LOG_LOCK = 0x6757_636F  # "gWco": one writer at a time appends to the change log


async def touch_incident(conn: AsyncConnection, incident_id: str, now: datetime, **values: Any) -> None:
    """Create the incident row if missing, then set the given columns (None values are skipped)."""
    await conn.execute(
        insert_ignoring_conflicts(conn, incidents).values(
            incident_id=incident_id, updated_at=now, needs_review=False, escalation_level=0, reopen_count=0
        )
    )
    known = {k: v for k, v in values.items() if v is not None}
    await conn.execute(incidents.update().where(incidents.c.incident_id == incident_id).values(updated_at=now, **known))


async def touch_handoff(conn: AsyncConnection, handoff_id: str, incident_id: str, **values: Any) -> None:
    """Create the handoff row if missing, then set the given columns (None values are skipped)."""
    await conn.execute(
        insert_ignoring_conflicts(conn, handoffs).values(
            handoff_id=handoff_id, incident_id=incident_id, late=False, warned=False, breached=False,
            paused=False, escalation_level=0,
        )
    )
    known = {k: v for k, v in values.items() if v is not None}
    if known:
        await conn.execute(handoffs.update().where(handoffs.c.handoff_id == handoff_id).values(**known))


async def get_handoff(conn: AsyncConnection, handoff_id: str) -> dict[str, Any] | None:
    """One handoff row, or None."""
    row = (await conn.execute(select(handoffs).where(handoffs.c.handoff_id == handoff_id))).first()
    return dict(row._mapping) if row else None


async def set_handoff_state(conn: AsyncConnection, handoff_id: str, state: str, *, unless: Iterable[str] = ()) -> None:
    """Move a handoff to `state` unless it already reached one of the later states in `unless`."""
    query = handoffs.update().where(handoffs.c.handoff_id == handoff_id)
    blocked = list(unless)
    if blocked:
        query = query.where(or_(handoffs.c.state.is_(None), handoffs.c.state.not_in(blocked)))
    await conn.execute(query.values(state=state))


async def add_timeline(conn: AsyncConnection, *, event_id: str, incident_id: str, at: datetime, event_type: str, detail: dict) -> None:
    """Append a fact to the incident's timeline (once per event id)."""
    await conn.execute(
        insert_ignoring_conflicts(conn, timeline).values(
            event_id=event_id, incident_id=incident_id, at=at, event_type=event_type, detail=detail
        )
    )


async def append_change(conn: AsyncConnection, *, incident_id: str, event_type: str, at: datetime) -> None:
    """Record that an incident changed; the live stream sends these in `seq` order."""
    if conn.dialect.name == "postgresql":
        # Sequence values are taken at insert but become visible at commit; holding a lock until
        # commit makes commit order equal seq order, so a reader never passes a gap that fills later.
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHANGE_LOG_LOCK})
    await conn.execute(changes.insert().values(incident_id=incident_id, event_type=event_type, at=at))


async def last_change_seq(conn: AsyncConnection) -> int:
    """The newest change-log sequence number (0 when empty)."""
    return int((await conn.execute(select(func.coalesce(func.max(changes.c.seq), 0)))).scalar_one())


async def changes_after(conn: AsyncConnection, seq: int, limit: int = 500) -> list[dict[str, Any]]:
    """Change-log rows after `seq`, oldest first."""
    rows = await conn.execute(select(changes).where(changes.c.seq > seq).order_by(changes.c.seq).limit(limit))
    return [dict(r._mapping) for r in rows]


async def get_incident(conn: AsyncConnection, incident_id: str) -> dict[str, Any] | None:
    """One incident row, or None."""
    row = (await conn.execute(select(incidents).where(incidents.c.incident_id == incident_id))).first()
    return dict(row._mapping) if row else None


async def incident_handoffs(conn: AsyncConnection, incident_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Handoffs per incident id, in dispatch order."""
    ids = list(incident_ids)
    grouped: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    for start in range(0, len(ids), 500):
        rows = await conn.execute(
            select(handoffs)
            .where(handoffs.c.incident_id.in_(ids[start : start + 500]))
            .order_by(handoffs.c.dispatched_at, handoffs.c.handoff_id)
        )
        for r in rows:
            grouped[r.incident_id].append(dict(r._mapping))
    return grouped


async def incident_timeline(conn: AsyncConnection, incident_id: str) -> list[dict[str, Any]]:
    """The incident's facts in the order the console applied them."""
    rows = await conn.execute(select(timeline).where(timeline.c.incident_id == incident_id).order_by(timeline.c.id))
    return [{"at": r.at, "event_type": r.event_type, "detail": r.detail} for r in rows]


async def find_incidents(
    conn: AsyncConnection,
    *,
    district_id: str | None = None,
    station_id: str | None = None,
    grid_ids: Iterable[str] | None = None,
    unit_id: str | None = None,
    open_only: bool = True,
    limit: int = 2000,
) -> list[dict[str, Any]]:
    """Incidents narrowed by area, grids or summoned unit (the caller's scope), newest first."""
    query = select(incidents)
    if district_id is not None:
        query = query.where(incidents.c.district_id == district_id)
    if station_id is not None:
        query = query.where(incidents.c.station_id == station_id)
    if grid_ids is not None:
        query = query.where(incidents.c.grid_id.in_(list(grid_ids)))
    if unit_id is not None:
        query = query.where(incidents.c.incident_id.in_(select(handoffs.c.incident_id).where(handoffs.c.unit_id == unit_id)))
    if open_only:
        query = query.where(incidents.c.closed_at.is_(None))
    rows = await conn.execute(query.order_by(incidents.c.reported_at.desc()).limit(limit))
    return [dict(r._mapping) for r in rows]


async def breaches_since(conn: AsyncConnection, since: datetime) -> list[dict[str, Any]]:
    """Handoffs whose report deadline breached since an instant, newest first."""
    rows = await conn.execute(
        select(handoffs).where(handoffs.c.breached.is_(True), handoffs.c.breached_at >= since).order_by(handoffs.c.breached_at.desc())
    )
    return [dict(r._mapping) for r in rows]
