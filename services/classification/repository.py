"""Classification state: the latest decision per incident (so a reclassification knows the old one)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Column, Float, Integer, MetaData, String, Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.runtime.db import UTCDateTime, insert_ignoring_conflicts

metadata = MetaData()

decisions = Table(
    "decisions",
    metadata,
    Column("incident_id", String(64), primary_key=True),
    Column("grid_id", String(64), nullable=False),
    Column("category", String(40), nullable=False),
    Column("urgency", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("confidence", Float, nullable=False),
    Column("needs_review", Boolean, nullable=False),
    Column("classifier_version", String(64), nullable=False),
    Column("decided_by", String(64), nullable=False),
    Column("decided_at", UTCDateTime, nullable=False),
)


async def save_decision(conn: AsyncConnection, **row: Any) -> bool:
    """Store the first decision for an incident; False if one already exists."""
    result = await conn.execute(insert_ignoring_conflicts(conn, decisions).values(**row))
    return result.rowcount == 1


async def get_decision(conn: AsyncConnection, incident_id: str) -> Any | None:
    """The current decision for an incident, or None."""
    return (await conn.execute(select(decisions).where(decisions.c.incident_id == incident_id))).first()


async def replace_decision(conn: AsyncConnection, incident_id: str, **values: Any) -> None:
    """Overwrite the current decision (a dispatcher's reclassification)."""
    await conn.execute(decisions.update().where(decisions.c.incident_id == incident_id).values(**values))


async def list_needing_review(conn: AsyncConnection, *, limit: int) -> list[Any]:
    """Decisions flagged for review, most pressing first, then oldest first."""
    query = (
        select(decisions)
        .where(decisions.c.needs_review.is_(True))
        .order_by(decisions.c.priority, decisions.c.decided_at)
        .limit(limit)
    )
    return list((await conn.execute(query)).all())


async def confirm_decision(conn: AsyncConnection, incident_id: str, *, decided_by: str) -> None:
    """A dispatcher confirmed the current decision: it no longer needs review."""
    await conn.execute(
        decisions.update().where(decisions.c.incident_id == incident_id).values(needs_review=False, decided_by=decided_by)
    )
