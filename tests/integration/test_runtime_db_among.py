"""`among(column, values)`: the batch UPDATEs' row filter, an array parameter on PostgreSQL and IN on SQLite."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select, update

from services.runtime.db import among, create_engine, create_schema

pytestmark = pytest.mark.integration

metadata = MetaData()
items = Table("items", metadata, Column("id", Integer, primary_key=True), Column("name", String(36)), Column("seen", Integer))


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request, tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'a.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = create_engine(url)
    await create_schema(engine, metadata)
    async with engine.begin() as conn:
        await conn.execute(items.delete())
        await conn.execute(items.insert(), [{"id": i, "name": f"n{i}", "seen": 0} for i in range(1, 1001)])
    yield engine
    await engine.dispose()


async def test_an_update_among_many_ids_touches_exactly_those_rows(engine):
    chosen = list(range(2, 1001, 3))  # 333 ids, more than one expanded IN would bind cheaply
    async with engine.begin() as conn:
        result = await conn.execute(update(items).where(among(conn, items.c.id, chosen)).values(seen=1).returning(items.c.id))
        assert sorted(row.id for row in result) == chosen
        seen = (await conn.execute(select(items.c.id).where(items.c.seen == 1))).scalars().all()
    assert sorted(seen) == chosen


async def test_string_keys_and_an_empty_list_match_as_in_does(engine):
    async with engine.connect() as conn:
        named = (await conn.execute(select(items.c.id).where(among(conn, items.c.name, ["n7", "n9", "absent"])))).scalars()
        assert sorted(named) == [7, 9]
        assert (await conn.execute(select(items.c.id).where(among(conn, items.c.id, [])))).scalars().all() == []
