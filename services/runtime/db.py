"""Database helpers: engine set-up for SQLite and PostgreSQL, aware-UTC columns, runtime tables.

Every service database holds two runtime tables beside its own state: the outbox (events
waiting to be published) and processed_events (ids already consumed, for idempotency). Both are
written in the same transaction as the state change they belong to.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ARRAY,
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    any_,
    bindparam,
    event,
    text,
)
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC and always returns them aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: store aware UTC instants only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is UTC:
            return value
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only auto-increments INTEGER PRIMARY KEY columns.
Serial = BigInteger().with_variant(Integer(), "sqlite")


def add_runtime_tables(metadata: MetaData) -> tuple[Table, Table]:
    """Define (once) the outbox and processed_events tables on a service's metadata."""
    if "outbox" in metadata.tables:
        return metadata.tables["outbox"], metadata.tables["processed_events"]
    outbox = Table(
        "outbox",
        metadata,
        Column("id", Serial, primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False, unique=True),
        Column("event_type", String(64), nullable=False),
        Column("topic", String(200), nullable=False),
        Column("key", String(200), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("headers", JSON, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("published_at", UTCDateTime, nullable=True),
    )
    Index(
        "ix_outbox_pending",
        outbox.c.id,
        postgresql_where=outbox.c.published_at.is_(None),
        sqlite_where=outbox.c.published_at.is_(None),
    )
    processed = Table(
        "processed_events",
        metadata,
        Column("consumer", String(120), primary_key=True),
        Column("event_id", String(36), primary_key=True),
        Column("processed_at", UTCDateTime, nullable=False),
    )
    return outbox, processed


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine tuned per backend (SQLite: WAL, busy timeout, BEGIN IMMEDIATE)."""
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy emit BEGIN itself so that it can be BEGIN IMMEDIATE below.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Taking the write lock up front avoids SQLITE_BUSY on read-then-write upgrades.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # A connection the server killed while it sat in the pool (a restart, a failover) must be
    # replaced before use: asyncpg's first statement on it can fail in an error SQLAlchemy does
    # not take for a disconnect (tests/component/test_intake_postgres.py). The ping is three round
    # trips per checkout; in A/B runs its cost was within the run-to-run noise (SLA timer arm rate
    # 880-1,033/s with it, 999/s without; a one-statement ping instead: 903-945/s).
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    return create_async_engine(url, **kwargs)


async def create_schema(engine: AsyncEngine, metadata: MetaData) -> None:
    """Create missing tables (idempotent)."""
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


async def ping(engine: AsyncEngine) -> None:
    """Raise if the database does not answer."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def insert_ignoring_conflicts(conn: AsyncConnection, table: Table) -> Any:
    """An INSERT that does nothing on a primary/unique key conflict, for SQLite and PostgreSQL."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing()


def among(conn: AsyncConnection, column: Any, values: list[Any]) -> Any:
    """`column IN values`; on PostgreSQL as `= ANY(array)`, one parameter however many values."""
    if conn.dialect.name == "postgresql":
        # An expanded IN renders and binds one parameter per value: 500 of them per batch.
        return column == any_(bindparam(None, values, type_=ARRAY(column.type)))
    return column.in_(values)
