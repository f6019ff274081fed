"""Readiness means the service can do its job: a lost broker or database, or a stuck consumer, fails it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts.topics import INTAKE_INCIDENTS
from infra.local import LocalKafka, ensure_kafka_jars, free_port
from services.classification import repository as classification_repo
from services.classification.app import create_app
from services.classification.settings import ClassificationSettings
from tests._infra import create_test_topics, unavailable
from tests.e2e.stack import eventually
from tests.integration.test_classification_on_real_kafka import send
from tests.support import reported

pytestmark = pytest.mark.integration


def settings_for(kafka_bootstrap: str, topic_prefix: str, database_url: str, **overrides) -> ClassificationSettings:
    """Classification on the test broker with a fast health sampler."""
    return ClassificationSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        database_url=database_url,
        outbox_poll_seconds=0.1,
        health_sample_seconds=0.2,
        **overrides,
    )


async def health(client: httpx.AsyncClient) -> httpx.Response:
    return await client.get("/health")


def sample(metrics_text: str, name: str) -> float:
    """The value of one unlabelled sample in a /metrics scrape."""
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == name:
                return s.value
    raise AssertionError(f"{name} not in the scrape")


@pytest.fixture
def own_broker(tmp_path) -> Iterator[LocalKafka]:
    """A broker for this test alone: freezing the session's broker would stall every other test."""
    broker = LocalKafka(tmp_path / "kafka", port=free_port())
    try:
        ensure_kafka_jars()
        broker.start()
        broker.wait_ready(timeout=120)
    except Exception as exc:  # noqa: BLE001 - reported as missing infrastructure
        broker.stop()
        unavailable(f"no local Kafka broker for the broker-outage test (needs Java 17 + Maven): {exc}")
    try:
        yield broker
    finally:
        broker.resume()  # a frozen JVM ignores SIGTERM until it runs again
        broker.stop()


async def test_readiness_fails_while_the_broker_is_frozen_or_down_and_recovers_when_it_is_back(
    own_broker, topic_prefix, pg_url
):
    await create_test_topics(own_broker.bootstrap, topic_prefix)
    app = create_app(settings_for(own_broker.bootstrap, topic_prefix, pg_url))
    runtime = app.state.runtime
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=30
        ) as client:
            await eventually(lambda: health(client), lambda r: r.status_code == 200, what="ready on a live broker")

            # Frozen (SIGSTOP): the broker keeps its sockets open but answers nothing.
            own_broker.pause()
            try:
                answer = await eventually(
                    lambda: health(client), lambda r: r.status_code == 503, what="readiness failing on a frozen broker"
                )
                assert answer.json()["broker"].startswith("unreachable")
                assert answer.json()["database"] == "ok"
                assert (await client.get("/live")).status_code == 200

                # An event committed during the outage waits in the outbox, and its age is visible.
                async with runtime.unit_of_work() as uow:
                    await uow.emit(reported("楼道堆放杂物"))
                first = await eventually(
                    lambda: client.get("/metrics"),
                    lambda r: sample(r.text, "gridwhistle_classification_outbox_backlog_events") == 1,
                    what="the outbox backlog gauge to count the stuck event",
                )
                await asyncio.sleep(1.5)
                later = (await client.get("/metrics")).text
                assert sample(later, "gridwhistle_classification_outbox_oldest_age_seconds") > sample(
                    first.text, "gridwhistle_classification_outbox_oldest_age_seconds"
                )
            finally:
                own_broker.resume()
            await eventually(
                lambda: health(client), lambda r: r.status_code == 200, timeout=90, what="ready after the thaw"
            )
            await eventually(
                lambda: client.get("/metrics"),
                lambda r: sample(r.text, "gridwhistle_classification_outbox_backlog_events") == 0,
                what="the stuck event published after the thaw",
            )

            # Down (stopped, connections refused), then started again on the same port and data.
            await asyncio.to_thread(own_broker.stop)
            answer = await eventually(
                lambda: health(client), lambda r: r.status_code == 503, what="readiness failing on a stopped broker"
            )
            assert answer.json()["broker"].startswith("unreachable")
            assert (await client.get("/live")).status_code == 200
            await asyncio.to_thread(lambda: own_broker.start().wait_ready(timeout=120))
            answer = await eventually(
                lambda: health(client), lambda r: r.status_code == 200, timeout=90, what="ready after the restart"
            )
            assert answer.json()["broker"] == "ok"


async def test_readiness_fails_while_the_database_is_gone_and_liveness_stays_up(
    kafka_bootstrap, kafka_topics, topic_prefix, pg_url, postgres_server
):
    app = create_app(settings_for(kafka_bootstrap, topic_prefix, pg_url))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            assert (await health(client)).status_code == 200
            await asyncio.to_thread(postgres_server.drop_database, pg_url.rsplit("/", 1)[1])

            answer = await health(client)
            assert answer.status_code == 503
            assert answer.json()["database"].startswith("unreachable")
            assert answer.json()["broker"] == "ok"
            assert (await client.get("/live")).status_code == 200


async def test_a_consumer_with_lag_that_processes_nothing_makes_readiness_fail_with_the_reason(
    kafka_bootstrap, kafka_topics, topic_prefix, pg_url, monkeypatch
):
    wedged = asyncio.Event()
    release = asyncio.Event()

    async def hang(*_args, **_kwargs):
        wedged.set()
        await release.wait()
        raise RuntimeError("released at the end of the test")

    monkeypatch.setattr(classification_repo, "save_decision", hang)
    app = create_app(settings_for(kafka_bootstrap, topic_prefix, pg_url, consumer_stall_seconds=1.0))
    runtime = app.state.runtime
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            try:
                incidents = [reported("楼道堆放杂物"), reported("楼道堆放杂物")]
                # One key, one partition: the second record waits behind the wedged first.
                key = incidents[0].key()
                await send(kafka_bootstrap, topic_prefix + INTAKE_INCIDENTS.name,
                           [(key, i.encode(), i.headers()) for i in incidents])
                await asyncio.wait_for(wedged.wait(), timeout=30)

                answer = await eventually(
                    lambda: health(client), lambda r: r.status_code == 503, what="readiness failing on the stall"
                )
                assert answer.json()["database"] == "ok" and answer.json()["broker"] == "ok"
                assert "stuck" in answer.json()["consumers"] and "no record processed" in answer.json()["consumers"]
                assert (await client.get("/live")).status_code == 200
                metrics = (await client.get("/metrics")).text
                assert any(
                    line.startswith("gridwhistle_classification_consumer_stuck{") and line.endswith(" 1.0")
                    for line in metrics.splitlines()
                )
                lag = runtime.metrics.consumer_lag.collect()[0].samples
                assert sum(s.value for s in lag) >= 1
            finally:
                release.set()
