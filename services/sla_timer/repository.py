"""SLA timer state: one row per deadline, plus tombstones for facts that arrived before their dispatch.

The scheduler's only hot query is "armed rows whose next_fire_at has come"; a partial index on
next_fire_at over armed rows keeps it, and "when is the next one", an index range scan however
many deadlines are fired, cancelled or armed far in the future.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Float, Index, Integer, MetaData, String, Table, and_, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.runtime.db import UTCDateTime, among, insert_ignoring_conflicts
from services.sla_timer.domain import OPEN_STATES, DeadlineState

metadata = MetaData()

deadlines = Table(
    "deadlines",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("incident_id", String(64), nullable=False),
    # NULL for the incident's VERIFICATION clock, which belongs to no handoff.
    Column("handoff_id", String(64), nullable=True),
    Column("unit_id", String(64), nullable=True),
    Column("kind", String(16), nullable=False),
    Column("urgency", String(16), nullable=False),
    Column("category", String(40), nullable=True),
    # Start of the clock (dispatch for REPORT, acknowledgement for ON_SCENE and RESOLUTION, the
    # incident's resolution for VERIFICATION), not the row's insert.
    Column("armed_at", UTCDateTime, nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    # Length of the clock in running time; pauses move due_at, never this.
    Column("window_seconds", Float, nullable=False),
    Column("state", String(12), nullable=False),
    Column("next_warning_at", UTCDateTime, nullable=True),
    # min(next_warning_at, due_at) while armed, NULL otherwise: the one column the scheduler reads.
    Column("next_fire_at", UTCDateTime, nullable=True),
    Column("warnings_sent", JSON, nullable=False, default=list),
    Column("remaining_seconds", Float, nullable=True),
    Column("paused_at", UTCDateTime, nullable=True),
    Column("paused_by", String(64), nullable=True),
    Column("fired_at", UTCDateTime, nullable=True),
    Column("cancelled_at", UTCDateTime, nullable=True),
    Column("cancel_reason", String(64), nullable=True),
    # When the awaited fact (ack, arrival, verification) came after the deadline had fired.
    Column("late_ack_at", UTCDateTime, nullable=True),
    Column("policy_version", String(64), nullable=False),
    # Where the fact that armed the clock was consumed: the awaited fact (same incident key) comes
    # on the same partition, so the scheduler fires only once it has processed that partition up
    # to the due instant. NULL for rows armed before this was recorded (fired without waiting).
    Column("source_topic", String(255), nullable=True),
    Column("source_partition", Integer, nullable=True),
)
Index(
    "ix_deadlines_armed_next_fire",
    deadlines.c.next_fire_at,
    postgresql_where=deadlines.c.state == DeadlineState.ARMED.value,
    sqlite_where=deadlines.c.state == DeadlineState.ARMED.value,
)
Index("ix_deadlines_state_urgency", deadlines.c.state, deadlines.c.urgency)
Index("ix_deadlines_incident", deadlines.c.incident_id)
Index("ix_deadlines_handoff", deadlines.c.handoff_id)

# A handoff fact (acknowledged, declined, ...) consumed before the HandoffDispatched it follows.
early_handoff_facts = Table(
    "early_handoff_facts",
    metadata,
    Column("handoff_id", String(64), primary_key=True),
    Column("incident_id", String(64), nullable=False),
    Column("acknowledged_at", UTCDateTime, nullable=True),
    Column("on_scene_at", UTCDateTime, nullable=True),
    Column("ended_by", String(32), nullable=True),
    Column("recorded_at", UTCDateTime, nullable=False),
)

# Incidents whose IncidentClosed was consumed: a dispatch arriving afterwards arms nothing.
closed_incidents = Table(
    "closed_incidents",
    metadata,
    Column("incident_id", String(64), primary_key=True),
    Column("closed_at", UTCDateTime, nullable=False),
)

# The chain generation of each incident that was reopened: its next VERIFICATION clock's generation.
incident_generations = Table(
    "incident_generations",
    metadata,
    Column("incident_id", String(64), primary_key=True),
    Column("generation", Integer, nullable=False),
)

_ARMED = DeadlineState.ARMED.value
_OPEN = [s.value for s in OPEN_STATES]


async def insert_deadline(conn: AsyncConnection, **row: Any) -> bool:
    """Store a new deadline; False if one with this id already exists (a redelivery)."""
    result = await conn.execute(insert_ignoring_conflicts(conn, deadlines).values(**row))
    return result.rowcount == 1


async def insert_deadlines_returning(conn: AsyncConnection, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Store new deadlines in one statement; return those stored by id (an existing id is left as it was)."""
    if not rows:
        return {}
    stmt = insert_ignoring_conflicts(conn, deadlines).returning(*deadlines.c)
    return {row.id: row for row in await conn.execute(stmt, rows)}


async def lock_deadlines(conn: AsyncConnection, deadline_ids: Sequence[str]) -> dict[str, Any]:
    """Deadline rows by id, locked as lock_deadline does (in id order, so two lockers cannot deadlock)."""
    stmt = select(deadlines).where(deadlines.c.id.in_(set(deadline_ids))).order_by(deadlines.c.id)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return {row.id: row for row in await conn.execute(stmt)}


async def get_deadline(conn: AsyncConnection, deadline_id: str) -> Any | None:
    """One deadline row, or None."""
    return (await conn.execute(select(deadlines).where(deadlines.c.id == deadline_id))).first()


async def lock_deadline(conn: AsyncConnection, deadline_id: str) -> Any | None:
    """One deadline row, locked against the scheduler and other commands on PostgreSQL."""
    stmt = select(deadlines).where(deadlines.c.id == deadline_id)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return (await conn.execute(stmt)).first()


async def deadlines_of_incident(conn: AsyncConnection, incident_id: str, limit: int = 500) -> Sequence[Any]:
    """An incident's deadlines, oldest clock first."""
    stmt = (
        select(deadlines)
        .where(deadlines.c.incident_id == incident_id)
        .order_by(deadlines.c.armed_at, deadlines.c.kind)
        .limit(limit)
    )
    return (await conn.execute(stmt)).all()


async def open_deadlines(
    conn: AsyncConnection, *, handoff_id: str | None = None, incident_id: str | None = None, kind: str | None = None
) -> Sequence[Any]:
    """Armed or paused deadlines of one handoff or of one incident, optionally of one kind."""
    stmt = select(deadlines).where(deadlines.c.state.in_(_OPEN))
    if kind is not None:
        stmt = stmt.where(deadlines.c.kind == kind)
    if handoff_id is not None:
        stmt = stmt.where(deadlines.c.handoff_id == handoff_id)
    if incident_id is not None:
        stmt = stmt.where(deadlines.c.incident_id == incident_id)
    return (await conn.execute(stmt.order_by(deadlines.c.id))).all()


async def cancel_if_open(conn: AsyncConnection, deadline_id: str, *, at: datetime, reason: str, late_ack_at: datetime | None = None) -> bool:
    """Cancel a deadline still armed or paused; False if the scheduler or another fact got there first."""
    return bool(await cancel_many_if_open(conn, [deadline_id], at=at, reason=reason, late_ack_at=late_ack_at))


async def fire_if_armed(conn: AsyncConnection, deadline_id: str, *, at: datetime) -> bool:
    """Mark an armed deadline fired; exactly one caller ever gets True for a deadline."""
    result = await conn.execute(
        update(deadlines)
        .where(deadlines.c.id == deadline_id, deadlines.c.state == _ARMED)
        .values(state=DeadlineState.FIRED.value, fired_at=at, next_fire_at=None, next_warning_at=None)
    )
    return result.rowcount == 1


async def fire_many_if_armed(conn: AsyncConnection, deadline_ids: list[str], *, at: datetime) -> set[str]:
    """Mark the armed ones among these deadlines fired, in one statement; return the ids it fired."""
    if not deadline_ids:
        return set()
    result = await conn.execute(
        update(deadlines)
        .where(among(conn, deadlines.c.id, deadline_ids), deadlines.c.state == _ARMED)
        .values(state=DeadlineState.FIRED.value, fired_at=at, next_fire_at=None, next_warning_at=None)
        .returning(deadlines.c.id)
    )
    return {row.id for row in result}


async def record_warning_if_armed(
    conn: AsyncConnection,
    deadline_id: str,
    *,
    expected_next_fire_at: datetime,
    warnings_sent: list[float],
    next_warning_at: datetime | None,
    next_fire_at: datetime,
) -> bool:
    """Record a sent warning, unless the row changed since it was read (then someone else acted)."""
    result = await conn.execute(
        update(deadlines)
        .where(
            deadlines.c.id == deadline_id,
            deadlines.c.state == _ARMED,
            deadlines.c.next_fire_at == expected_next_fire_at,
        )
        .values(warnings_sent=warnings_sent, next_warning_at=next_warning_at, next_fire_at=next_fire_at)
    )
    return result.rowcount == 1


async def withdraw_if_fired(conn: AsyncConnection, deadline_id: str, *, at: datetime) -> bool:
    """Mark a fired deadline's breach withdrawn; exactly one caller ever gets True for a deadline."""
    result = await conn.execute(
        update(deadlines)
        .where(deadlines.c.id == deadline_id, deadlines.c.state == DeadlineState.FIRED.value)
        .values(state=DeadlineState.WITHDRAWN.value, cancelled_at=at, cancel_reason="breach_withdrawn")
    )
    return result.rowcount == 1


async def record_late_ack(conn: AsyncConnection, deadline_id: str, at: datetime) -> bool:
    """Record the first acknowledgement of a deadline that already fired."""
    result = await conn.execute(
        update(deadlines)
        .where(
            deadlines.c.id == deadline_id,
            deadlines.c.state == DeadlineState.FIRED.value,
            deadlines.c.late_ack_at.is_(None),
        )
        .values(late_ack_at=at)
    )
    return result.rowcount == 1


async def pause(conn: AsyncConnection, deadline_id: str, *, at: datetime, remaining_seconds: float, actor_id: str) -> bool:
    """Stop an armed deadline's clock, keeping the running time left."""
    result = await conn.execute(
        update(deadlines)
        .where(deadlines.c.id == deadline_id, deadlines.c.state == _ARMED, deadlines.c.due_at > at)
        .values(
            state=DeadlineState.PAUSED.value,
            remaining_seconds=remaining_seconds,
            paused_at=at,
            paused_by=actor_id,
            next_fire_at=None,
            next_warning_at=None,
        )
    )
    return result.rowcount == 1


async def resume(
    conn: AsyncConnection, deadline_id: str, *, due_at: datetime, next_warning_at: datetime | None, next_fire_at: datetime
) -> bool:
    """Run a paused deadline's clock again towards its new due instant."""
    result = await conn.execute(
        update(deadlines)
        .where(deadlines.c.id == deadline_id, deadlines.c.state == DeadlineState.PAUSED.value)
        .values(
            state=_ARMED,
            due_at=due_at,
            next_warning_at=next_warning_at,
            next_fire_at=next_fire_at,
            remaining_seconds=None,
            paused_at=None,
            paused_by=None,
        )
    )
    return result.rowcount == 1


async def due_sources(conn: AsyncConnection, now: datetime) -> Sequence[Any]:
    """The (source_topic, source_partition) pairs of the armed rows due at `now`."""
    stmt = (
        select(deadlines.c.source_topic, deadlines.c.source_partition)
        .where(deadlines.c.state == _ARMED, deadlines.c.next_fire_at <= now)
        .distinct()
    )
    return (await conn.execute(stmt)).all()


# What firing a row needs (its events, its metrics, its warning plan): a burst claims thousands a
# second, and each column more is converted once per row.
_FIRING_COLUMNS = tuple(
    deadlines.c[name]
    for name in (
        "id", "incident_id", "handoff_id", "unit_id", "kind", "urgency", "category", "due_at", "window_seconds",
        "next_fire_at", "warnings_sent", "policy_version", "source_topic", "source_partition",
    )
)


async def claim_due(
    conn: AsyncConnection,
    now: datetime,
    limit: int,
    watermarks: dict[tuple[str, int], datetime | None] | None = None,
    watched_topics: frozenset[str] = frozenset(),
) -> Sequence[Any]:
    """Armed rows whose next fire instant has come, earliest first; on PostgreSQL, locked for us alone.

    With `watermarks`, a row armed from a watched topic is claimed only when its partition's view
    is complete up to its fire instant; rows of unwatched or unknown sources are not held.
    """
    stmt = select(*_FIRING_COLUMNS).where(deadlines.c.state == _ARMED, deadlines.c.next_fire_at <= now)
    if watermarks is not None:
        allowed = [deadlines.c.source_topic.is_(None), deadlines.c.source_topic.not_in(sorted(watched_topics))]
        for (topic, partition), mark in watermarks.items():
            if mark is not None:
                allowed.append(
                    and_(
                        deadlines.c.source_topic == topic,
                        deadlines.c.source_partition == partition,
                        deadlines.c.next_fire_at <= mark,
                    )
                )
        stmt = stmt.where(or_(*allowed))
    stmt = stmt.order_by(deadlines.c.next_fire_at).limit(limit)
    if conn.dialect.name == "postgresql":
        # Rows another replica is firing are skipped, not waited for; it commits them itself.
        stmt = stmt.with_for_update(skip_locked=True)
    return (await conn.execute(stmt)).all()


async def next_fire_instant(conn: AsyncConnection) -> datetime | None:
    """The earliest instant at which an armed deadline needs the scheduler."""
    return (
        await conn.execute(select(func.min(deadlines.c.next_fire_at)).where(deadlines.c.state == _ARMED))
    ).scalar()


async def count_open_by_urgency(conn: AsyncConnection) -> Sequence[Any]:
    """(state, urgency, count) of armed and paused deadlines, for the pending gauge."""
    stmt = (
        select(deadlines.c.state, deadlines.c.urgency, func.count())
        .where(deadlines.c.state.in_(_OPEN))
        .group_by(deadlines.c.state, deadlines.c.urgency)
    )
    return (await conn.execute(stmt)).all()


async def cancel_many_if_open(
    conn: AsyncConnection, deadline_ids: Sequence[str], *, at: datetime, reason: str, late_ack_at: datetime | None = None
) -> set[str]:
    """Cancel each deadline still armed or paused, in one statement; return the ids it cancelled."""
    result = await conn.execute(
        update(deadlines)
        .where(deadlines.c.id.in_(set(deadline_ids)), deadlines.c.state.in_(_OPEN))
        .values(
            state=DeadlineState.CANCELLED.value,
            cancelled_at=at,
            cancel_reason=reason,
            next_fire_at=None,
            next_warning_at=None,
            late_ack_at=late_ack_at,
        )
        .returning(deadlines.c.id)
    )
    return {row.id for row in result}


async def early_facts(conn: AsyncConnection, handoff_ids: set[str]) -> dict[str, Any]:
    """What was consumed about each of these handoffs before its dispatch, by handoff id."""
    stmt = select(early_handoff_facts).where(early_handoff_facts.c.handoff_id.in_(handoff_ids))
    return {row.handoff_id: row for row in await conn.execute(stmt)}


async def get_early_fact(conn: AsyncConnection, handoff_id: str) -> Any | None:
    """What was consumed about a handoff before its dispatch, or None."""
    return (await early_facts(conn, {handoff_id})).get(handoff_id)


async def record_early_fact(
    conn: AsyncConnection,
    *,
    handoff_id: str,
    incident_id: str,
    at: datetime,
    acknowledged_at: datetime | None = None,
    on_scene_at: datetime | None = None,
    ended_by: str | None = None,
) -> None:
    """Remember a fact about a handoff whose dispatch has not been consumed yet."""
    await conn.execute(
        insert_ignoring_conflicts(conn, early_handoff_facts).values(
            handoff_id=handoff_id, incident_id=incident_id, recorded_at=at
        )
    )
    values: dict[str, Any] = {}
    if acknowledged_at is not None:
        values["acknowledged_at"] = acknowledged_at
    if on_scene_at is not None:
        values["on_scene_at"] = on_scene_at
    if ended_by is not None:
        values["ended_by"] = ended_by
    if values:
        await conn.execute(
            update(early_handoff_facts).where(early_handoff_facts.c.handoff_id == handoff_id).values(**values)
        )


async def record_closed(conn: AsyncConnection, incident_id: str, at: datetime) -> None:
    """Remember that an incident is closed."""
    await conn.execute(insert_ignoring_conflicts(conn, closed_incidents).values(incident_id=incident_id, closed_at=at))


async def dispatch_context(conn: AsyncConnection, incident_id: str, handoff_id: str) -> tuple[bool, Any | None]:
    """(is the incident closed, what was consumed about the handoff before its dispatch), in one query."""
    closed = select(closed_incidents.c.incident_id).where(closed_incidents.c.incident_id == incident_id).exists()
    one = select(literal(1).label("one")).subquery()
    stmt = select(closed.label("closed"), early_handoff_facts).select_from(
        one.outerjoin(early_handoff_facts, early_handoff_facts.c.handoff_id == handoff_id)
    )
    row = (await conn.execute(stmt)).one()
    return bool(row.closed), (row if row.handoff_id is not None else None)


async def dispatch_contexts(
    conn: AsyncConnection, incident_ids: set[str], handoff_ids: set[str]
) -> tuple[set[str], dict[str, Any]]:
    """dispatch_context for several dispatches: (the closed incidents among them, early facts by handoff id)."""
    stmt = select(closed_incidents.c.incident_id).where(closed_incidents.c.incident_id.in_(incident_ids))
    closed = {row.incident_id for row in await conn.execute(stmt)}
    return closed, await early_facts(conn, handoff_ids)


async def is_closed(conn: AsyncConnection, incident_id: str) -> bool:
    """True once IncidentClosed was consumed for the incident."""
    stmt = select(closed_incidents.c.incident_id).where(closed_incidents.c.incident_id == incident_id)
    return (await conn.execute(stmt)).first() is not None


async def latest_handoff_clock(conn: AsyncConnection, incident_id: str) -> Any | None:
    """The incident's most recently started handoff clock: its urgency and category are the incident's latest."""
    stmt = (
        select(deadlines.c.urgency, deadlines.c.category)
        .where(deadlines.c.incident_id == incident_id, deadlines.c.handoff_id.is_not(None))
        .order_by(deadlines.c.armed_at.desc())
        .limit(1)
    )
    return (await conn.execute(stmt)).first()


async def chain_generation(conn: AsyncConnection, incident_id: str) -> int:
    """The incident's current chain generation: 0, or its reopen count once reopened."""
    stmt = select(incident_generations.c.generation).where(incident_generations.c.incident_id == incident_id)
    return (await conn.execute(stmt)).scalar() or 0


async def advance_generation(conn: AsyncConnection, incident_id: str, generation: int) -> bool:
    """Move the incident to chain `generation`; False if it is already there or beyond."""
    await conn.execute(insert_ignoring_conflicts(conn, incident_generations).values(incident_id=incident_id, generation=0))
    result = await conn.execute(
        update(incident_generations)
        .where(incident_generations.c.incident_id == incident_id, incident_generations.c.generation < generation)
        .values(generation=generation)
    )
    return result.rowcount == 1
