"""Intake state: the reports, their idempotency keys, and the progress projection built from events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from services.intake.domain import BoundingBox
from services.runtime.db import Serial, UTCDateTime, insert_ignoring_conflicts

metadata = MetaData()

incidents = Table(
    "incidents",
    metadata,
    Column("incident_id", String(64), primary_key=True),
    Column("grid_id", String(64), nullable=False),
    Column("reporter_id", String(64), nullable=False),
    Column("description", Text, nullable=False),
    Column("latitude", Float, nullable=True),
    Column("longitude", Float, nullable=True),
    Column("address", String(300), nullable=True),
    Column("category_hint", String(40), nullable=True),
    Column("media", JSON, nullable=False),
    Column("occurred_at", UTCDateTime, nullable=True),
    Column("reported_at", UTCDateTime, nullable=False),
    Column("channel", String(16), nullable=False),
    Column("duplicate_of", String(64), nullable=True),
    Column("duplicate_reason", String(300), nullable=True),
)
Index("ix_incidents_grid_reported", incidents.c.grid_id, incidents.c.reported_at)
Index("ix_incidents_reporter_reported", incidents.c.reporter_id, incidents.c.reported_at)
Index("ix_incidents_reported", incidents.c.reported_at)

# The primary key is what stops two concurrent requests with one key from creating two incidents.
# A key belongs to the caller who sent it (`scope`: "user:<id>" or "open311:<client>"), so two
# callers who happen to pick the same key never meet; "" marks rows stored before keys were scoped.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(200), primary_key=True, server_default=""),
    Column("key", String(128), primary_key=True),
    Column("body_hash", String(64), nullable=False),
    Column("incident_id", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# One row per incident, keyed without a foreign key: events may arrive before or without the report.
progress = Table(
    "progress",
    metadata,
    Column("incident_id", String(64), primary_key=True),
    Column("category", String(40), nullable=True),
    Column("urgency", String(16), nullable=True),
    Column("priority", Integer, nullable=True),
    Column("classified_at", UTCDateTime, nullable=True),
    Column("closure_status", String(16), nullable=True),
    Column("closure_status_at", UTCDateTime, nullable=True),
    Column("satisfaction", String(32), nullable=True),
    Column("satisfaction_at", UTCDateTime, nullable=True),
    Column("outcome", String(32), nullable=True),
    Column("closed_at", UTCDateTime, nullable=True),
)

handoffs = Table(
    "handoffs",
    metadata,
    Column("handoff_id", String(64), primary_key=True),
    Column("incident_id", String(64), nullable=False, index=True),
    Column("unit_id", String(64), nullable=True),
    Column("department", String(64), nullable=True),
    Column("role", String(16), nullable=True),
    Column("state", String(16), nullable=False),
    Column("dispatched_at", UTCDateTime, nullable=True),
    Column("report_due_at", UTCDateTime, nullable=True),
    Column("acknowledged_at", UTCDateTime, nullable=True),
    Column("late", Boolean, nullable=False, default=False),
    Column("breached", Boolean, nullable=False, default=False),
    Column("escalation_level", Integer, nullable=False, default=0),
)

escalations = Table(
    "escalations",
    metadata,
    Column("incident_id", String(64), primary_key=True),
    Column("level", Integer, primary_key=True),
    Column("unit_id", String(64), primary_key=True),
    Column("reason", String(500), nullable=False),
    Column("trigger_handoff_id", String(64), nullable=True),
    Column("escalated_at", UTCDateTime, nullable=False),
)

# seq keeps arrival order among facts stamped with the same instant.
timeline = Table(
    "timeline",
    metadata,
    Column("seq", Serial, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("incident_id", String(64), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("type", String(64), nullable=False),
    Column("summary", String(500), nullable=False),
)
Index("ix_timeline_incident_at", timeline.c.incident_id, timeline.c.at)


# --- reports and idempotency ----------------------------------------------------------------


async def insert_incident(conn: AsyncConnection, **row: Any) -> None:
    """Store a new report."""
    await conn.execute(incidents.insert().values(**row))


async def get_incident(conn: AsyncConnection, incident_id: str) -> Any | None:
    """One report, or None."""
    return (await conn.execute(select(incidents).where(incidents.c.incident_id == incident_id))).first()


async def list_incidents(
    conn: AsyncConnection,
    *,
    reporter_id: str | None = None,
    categories: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    incident_ids: Sequence[str] | None = None,
    closed: bool | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Any]:
    """Reports matching the filters, newest first."""
    query = select(incidents)
    if reporter_id is not None:
        query = query.where(incidents.c.reporter_id == reporter_id)
    if categories:
        classified = select(progress.c.incident_id).where(progress.c.category.in_(categories))
        unclassified = select(progress.c.incident_id).where(progress.c.category.is_not(None))
        query = query.where(
            or_(
                incidents.c.incident_id.in_(classified),
                and_(incidents.c.category_hint.in_(categories), incidents.c.incident_id.not_in(unclassified)),
            )
        )
    if since is not None:
        query = query.where(incidents.c.reported_at >= since)
    if until is not None:
        query = query.where(incidents.c.reported_at <= until)
    if incident_ids:
        query = query.where(incidents.c.incident_id.in_(incident_ids))
    if closed is not None:
        closed_ids = select(progress.c.incident_id).where(progress.c.closed_at.is_not(None))
        query = query.where(incidents.c.incident_id.in_(closed_ids) if closed else incidents.c.incident_id.not_in(closed_ids))
    query = query.order_by(incidents.c.reported_at.desc(), incidents.c.incident_id).limit(limit).offset(offset)
    return list((await conn.execute(query)).all())


async def recent_reports_near(
    conn: AsyncConnection, *, grid_id: str, box: BoundingBox | None, since: datetime, until: datetime | None = None
) -> list[Any]:
    """Reports from `since` (to `until`) in the same grid or inside the box, with their category and closing time."""
    place = incidents.c.grid_id == grid_id
    if box is not None:
        place = or_(
            place,
            and_(
                incidents.c.latitude.between(box.min_latitude, box.max_latitude),
                incidents.c.longitude.between(box.min_longitude, box.max_longitude),
            ),
        )
    when = incidents.c.reported_at >= since
    if until is not None:
        when = and_(when, incidents.c.reported_at <= until)
    query = (
        select(incidents, progress.c.category, progress.c.closed_at)
        .select_from(incidents.outerjoin(progress, progress.c.incident_id == incidents.c.incident_id))
        .where(place, when)
        .order_by(incidents.c.reported_at)
        .limit(500)
    )
    return list((await conn.execute(query)).all())


async def link_duplicate(conn: AsyncConnection, *, incident_id: str, original_incident_id: str, reason: str) -> bool:
    """Mark an incident as a probable duplicate unless it is linked already; True when this call linked it.

    The condition is what keeps a pair to one link when two transactions find it at once: the
    second waits for the first's row lock, then finds the incident linked.
    """
    result = await conn.execute(
        update(incidents)
        .where(incidents.c.incident_id == incident_id, incidents.c.duplicate_of.is_(None))
        .values(duplicate_of=original_incident_id, duplicate_reason=reason[:300])
    )
    return result.rowcount == 1


LEGACY_KEY_SCOPE = ""


async def get_idempotency_key(conn: AsyncConnection, scope: str, key: str) -> Any | None:
    """The stored request for a caller's idempotency key, or None.

    A key stored before keys were scoped still answers its retries: its body hash includes the
    reporter (or city app), so it replays only for the caller who sent it and conflicts for others.
    """
    query = (
        select(idempotency_keys)
        .where(idempotency_keys.c.key == key, idempotency_keys.c.scope.in_([scope, LEGACY_KEY_SCOPE]))
        .order_by(idempotency_keys.c.scope.desc())
        .limit(1)
    )
    return (await conn.execute(query)).first()


async def insert_idempotency_key(conn: AsyncConnection, **row: Any) -> None:
    """Remember a key; raises IntegrityError if another request stored it first."""
    await conn.execute(idempotency_keys.insert().values(**row))


# --- projection -----------------------------------------------------------------------------


async def lock_progress(conn: AsyncConnection, incident_id: str) -> Any:
    """The progress row of an incident, created if missing and locked for this transaction."""
    await conn.execute(insert_ignoring_conflicts(conn, progress).values(incident_id=incident_id))
    query = select(progress).where(progress.c.incident_id == incident_id).with_for_update()
    return (await conn.execute(query)).one()


async def update_progress(conn: AsyncConnection, incident_id: str, **values: Any) -> None:
    """Change an incident's progress row."""
    await conn.execute(update(progress).where(progress.c.incident_id == incident_id).values(**values))


async def lock_handoff(conn: AsyncConnection, handoff_id: str, incident_id: str, state: str) -> Any:
    """A handoff row, created in `state` if missing (a fact may precede its dispatch), and locked."""
    await conn.execute(
        insert_ignoring_conflicts(conn, handoffs).values(
            handoff_id=handoff_id, incident_id=incident_id, state=state, late=False, breached=False, escalation_level=0
        )
    )
    query = select(handoffs).where(handoffs.c.handoff_id == handoff_id).with_for_update()
    return (await conn.execute(query)).one()


async def update_handoff(conn: AsyncConnection, handoff_id: str, **values: Any) -> None:
    """Change a handoff row."""
    await conn.execute(update(handoffs).where(handoffs.c.handoff_id == handoff_id).values(**values))


async def record_escalation(conn: AsyncConnection, **row: Any) -> None:
    """Store an escalation step once."""
    await conn.execute(insert_ignoring_conflicts(conn, escalations).values(**row))


async def append_timeline(conn: AsyncConnection, *, event_id: str, incident_id: str, at: datetime, type: str, summary: str) -> None:
    """Append one timeline row; a redelivered event adds nothing."""
    await conn.execute(
        insert_ignoring_conflicts(conn, timeline).values(
            event_id=event_id, incident_id=incident_id, at=at, type=type, summary=summary[:500]
        )
    )


async def get_progress(conn: AsyncConnection, incident_ids: Sequence[str]) -> dict[str, Any]:
    """Progress rows by incident id."""
    if not incident_ids:
        return {}
    rows = (await conn.execute(select(progress).where(progress.c.incident_id.in_(incident_ids)))).all()
    return {row.incident_id: row for row in rows}


async def get_handoffs(conn: AsyncConnection, incident_ids: Sequence[str]) -> dict[str, list[Any]]:
    """Handoff rows by incident id, oldest dispatch first."""
    result: dict[str, list[Any]] = {i: [] for i in incident_ids}
    if not incident_ids:
        return result
    query = (
        select(handoffs)
        .where(handoffs.c.incident_id.in_(incident_ids))
        .order_by(handoffs.c.dispatched_at.is_(None), handoffs.c.dispatched_at, handoffs.c.handoff_id)
    )
    for row in (await conn.execute(query)).all():
        result[row.incident_id].append(row)
    return result


async def get_escalations(conn: AsyncConnection, incident_id: str) -> list[Any]:
    """Escalation steps of an incident, lowest level first."""
    query = select(escalations).where(escalations.c.incident_id == incident_id).order_by(escalations.c.level, escalations.c.escalated_at)
    return list((await conn.execute(query)).all())


async def get_timeline(conn: AsyncConnection, incident_id: str) -> list[Any]:
    """Timeline rows of an incident in event-time order."""
    query = select(timeline).where(timeline.c.incident_id == incident_id).order_by(timeline.c.at, timeline.c.seq)
    return list((await conn.execute(query)).all())


async def last_update_times(conn: AsyncConnection, incident_ids: Sequence[str]) -> dict[str, datetime]:
    """The latest timeline instant per incident."""
    if not incident_ids:
        return {}
    query = (
        select(timeline.c.incident_id, func.max(timeline.c.at))
        .where(timeline.c.incident_id.in_(incident_ids))
        .group_by(timeline.c.incident_id)
    )
    return {incident_id: at for incident_id, at in (await conn.execute(query)).all()}
