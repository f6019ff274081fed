"""Every service's Alembic history builds exactly the tables its code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from services.runtime.db import create_engine, create_schema
from services.runtime.migrations import migrate, schema_differences, service_metadata

SERVICES = ("intake", "classification", "routing", "sla_timer", "closure", "console")


async def assert_in_sync(url: str, service: str) -> None:
    metadata = service_metadata(service)
    engine = create_engine(url)
    try:
        await migrate(engine, service, metadata)
        await migrate(engine, service, metadata)  # a second start is a no-op
        async with engine.connect() as conn:
            differences = await conn.run_sync(schema_differences, metadata)
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert differences == [], f"{service}: tables and migrations differ; run `python -m services.runtime.migrations revision {service} -m ...`"
        assert set(metadata.tables) | {"alembic_version"} == tables
    finally:
        await engine.dispose()


@pytest.mark.parametrize("service", SERVICES)
async def test_migrations_match_the_tables_on_sqlite(tmp_path, service):
    await assert_in_sync(f"sqlite+aiosqlite:///{tmp_path}/{service}.db", service)


@pytest.mark.integration
@pytest.mark.parametrize("service", SERVICES)
async def test_migrations_match_the_tables_on_postgresql(pg_url_factory, service):
    await assert_in_sync(pg_url_factory(service), service)


async def test_a_database_created_before_migrations_is_adopted_not_recreated(tmp_path):
    metadata = service_metadata("classification")
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/legacy.db")
    try:
        await create_schema(engine, metadata)
        await migrate(engine, "classification", metadata)
        async with engine.connect() as conn:
            assert await conn.run_sync(schema_differences, metadata) == []
            assert "alembic_version" in await conn.run_sync(lambda c: inspect(c).get_table_names())
    finally:
        await engine.dispose()


def test_a_table_without_a_migration_is_detected(tmp_path):
    import asyncio

    from sqlalchemy import Column, Integer, Table

    metadata = service_metadata("classification")
    Table("added_without_migration", metadata, Column("id", Integer, primary_key=True))
    with pytest.raises(AssertionError):
        asyncio.run(_migrate_and_compare(f"sqlite+aiosqlite:///{tmp_path}/drift.db", metadata))


async def _migrate_and_compare(url, metadata):
    engine = create_engine(url)
    try:
        await migrate(engine, "classification", metadata)
        async with engine.connect() as conn:
            assert await conn.run_sync(schema_differences, metadata) == []
    finally:
        await engine.dispose()
