"""The KPI projection on real Kafka and PostgreSQL: live figures, then a rebuild from offset zero gives the same."""

from __future__ import annotations

import asyncio
import sys

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from contracts.topics import topic_for_event
from services.closure import kpi_store
from services.closure.app import create_app
from services.closure.kpi import Dimension, compute_kpis, grid_areas, row_as_dict
from services.closure.settings import ClosureSettings
from services.runtime.clock import FakeClock
from services.runtime.db import create_engine
from tests.component.test_closure_kpi_history import AS_OF, History, assert_same_figures, expected_rows, generate_history
from tests.e2e.stack import eventually
from tests.support import as_user

pytestmark = pytest.mark.integration

# Enough for every case of the history (~450 events) while the service consumes it in seconds.
HISTORY_SIZE = 30


async def publish_history(bootstrap: str, prefix: str, history: History) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sends = [
            await producer.send(
                prefix + topic_for_event(e.type).name,
                e.encode(),
                key=e.key(),
                headers=[(k, v.encode()) for k, v in e.headers().items()],
            )
            for e in history.envelopes
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def all_figures(database_url: str, history: History) -> dict[Dimension, list]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            facts = await kpi_store.load_facts(conn)
    finally:
        await engine.dispose()
    areas = grid_areas(history.reference)
    return {d: compute_kpis(facts, dimension=d, as_of=AS_OF, areas=areas) for d in Dimension}


async def rebuild_command(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.closure.rebuild_kpis", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def test_a_rebuild_from_offset_zero_gives_the_figures_the_running_service_shows(
    kafka_bootstrap, kafka_topics, topic_prefix, pg_url, pg_url_factory
):
    history = generate_history(incidents=HISTORY_SIZE, seed=99)
    settings = ClosureSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        database_url=pg_url,
        outbox_poll_seconds=0.1,
        log_level="WARNING",
    )
    app = create_app(settings, clock=FakeClock(AS_OF))
    async with app.router.lifespan_context(app):
        await publish_history(kafka_bootstrap, topic_prefix, history)
        transport = httpx.ASGITransport(app=app)
        headers = as_user(app, "sup-1")
        async with httpx.AsyncClient(transport=transport, base_url="http://closure", headers=headers) as client:
            expected = expected_rows(history, "district")

            async def district_rows():
                return (await client.get("/api/v1/kpis", params={"dimension": "district"})).json()["rows"]

            def complete(rows) -> bool:
                try:
                    assert_same_figures(rows, expected)
                except AssertionError:
                    return False
                return True

            await eventually(district_rows, complete, timeout=90, what="the live figures of the whole history")
        runtime = app.state.runtime
        outbox = runtime.tables[0]

        async def unpublished() -> int:
            async with runtime.engine.connect() as conn:
                return len((await conn.execute(outbox.select().where(outbox.c.published_at.is_(None)))).all())

        await eventually(unpublished, lambda n: n == 0, timeout=30, what="closure's own events published")

    rebuilt_url = pg_url_factory("rebuilt")
    code, output = await rebuild_command(
        "--bootstrap", kafka_bootstrap, "--topic-prefix", topic_prefix, "--database-url", rebuilt_url
    )
    assert code == 0, output
    live, rebuilt = await all_figures(pg_url, history), await all_figures(rebuilt_url, history)
    assert rebuilt == live, output
    for dimension in ("all", "department", "grid", "category", "day"):
        assert_same_figures([row_as_dict(r) for r in rebuilt[Dimension(dimension)]], expected_rows(history, dimension))

    code, output = await rebuild_command(
        "--bootstrap", kafka_bootstrap, "--topic-prefix", topic_prefix, "--database-url", rebuilt_url
    )
    assert code == 2 and "--replace" in output, "a second rebuild into a store with facts must be refused"
