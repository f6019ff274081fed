"""The test infrastructure itself works: a real broker, the topic catalogue, PostgreSQL, process control."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from infra.local import (
    LocalKafka,
    LocalPostgres,
    ServiceProcess,
    ensure_kafka_jars,
    free_port,
    load_topic_catalogue,
)
from tests._infra import create_test_topics, unavailable
from tests.support import pids_mentioning


def _process_state(pid: int) -> str:
    # Field 3 of /proc/<pid>/stat; "T" means stopped by a signal.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


@pytest.mark.integration
async def test_keyed_message_round_trip_with_idempotent_producer(kafka_bootstrap: str, topic_prefix: str) -> None:
    topics = await create_test_topics(kafka_bootstrap, topic_prefix)
    topic = topics[0]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        first = await producer.send_and_wait(topic, key=b"incident-42", value=b'{"n": 1}')
        second = await producer.send_and_wait(topic, key=b"incident-42", value=b'{"n": 2}')
    finally:
        await producer.stop()
    # Same key, same partition: per-incident ordering relies on it.
    assert first.partition == second.partition
    assert second.offset == first.offset + 1

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{topic_prefix}infra-test",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        received = []
        async with asyncio.timeout(60):
            while len(received) < 2:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    received.extend(records)
    finally:
        await consumer.stop()
    assert [(r.key, r.value, r.partition) for r in received] == [
        (b"incident-42", b'{"n": 1}', first.partition),
        (b"incident-42", b'{"n": 2}', first.partition),
    ]


@pytest.mark.integration
async def test_catalogue_topics_exist_with_their_partitions(kafka_bootstrap: str, topic_prefix: str) -> None:
    specs = load_topic_catalogue()
    assert specs, "infra/topics.yaml lists no topic"
    names = await create_test_topics(kafka_bootstrap, topic_prefix)
    assert names == [topic_prefix + spec.name for spec in specs]
    # Idempotent: a second run finds them all and changes nothing.
    assert await create_test_topics(kafka_bootstrap, topic_prefix) == names

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = {t["topic"]: t for t in await admin.describe_topics(names)}
    finally:
        await admin.close()
    for spec in specs:
        topic = described[topic_prefix + spec.name]
        assert topic["error_code"] == 0
        assert len(topic["partitions"]) == spec.partitions, spec.name
        assert all(p["leader"] >= 0 for p in topic["partitions"])


@pytest.mark.integration
async def test_kafka_topics_fixture_maps_catalogue_names(kafka_topics: dict[str, str], topic_prefix: str) -> None:
    assert set(kafka_topics) == {spec.name for spec in load_topic_catalogue()}
    assert all(real == topic_prefix + name for name, real in kafka_topics.items())


@pytest.mark.integration
async def test_postgres_fixture_gives_a_working_database(pg_url: str, pg_url_factory) -> None:
    assert pg_url.startswith("postgresql+asyncpg://")
    other = pg_url_factory("second")
    assert other != pg_url
    for url in (pg_url, other):
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                assert (await conn.execute(text("select 1"))).scalar_one() == 1
                await conn.execute(text("create table t (id int primary key)"))
                await conn.execute(text("insert into t values (1)"))
        finally:
            await engine.dispose()


def _local_kafka_or_skip() -> None:
    try:
        ensure_kafka_jars()
    except Exception as exc:
        unavailable(f"cannot fetch the Kafka jars for LocalKafka: {exc}")


@pytest.mark.integration
def test_local_kafka_pauses_restarts_on_its_data_dir_and_leaves_no_jvm(tmp_path: Path) -> None:
    _local_kafka_or_skip()
    data_dir = tmp_path / "kafka"
    broker = LocalKafka(data_dir, port=free_port())
    with broker:
        first_pid = broker.pid
        assert pids_mentioning(str(data_dir))
        broker.pause()
        time.sleep(0.3)  # SIGSTOP reaches every JVM thread asynchronously
        assert _process_state(first_pid) == "T"
        broker.resume()
        broker.wait_ready(timeout=30)
    assert not broker.is_running
    assert not pids_mentioning(str(data_dir)), "a JVM survived LocalKafka.stop()"

    # Same (already formatted) data dir, a crash instead of a clean stop.
    broker.start()
    broker.wait_ready(timeout=60)
    assert broker.pid != first_pid
    broker.kill()
    assert not pids_mentioning(str(data_dir)), "a JVM survived LocalKafka.kill()"


@pytest.mark.integration
def test_local_postgres_survives_a_hard_kill(tmp_path: Path) -> None:
    try:
        pg = LocalPostgres()
    except FileNotFoundError as exc:
        unavailable(str(exc))
    with pg:
        url = pg.create_database("crashme")
        pg.kill()
        assert not pg.is_running
        pg.start()  # crash recovery
        assert pg.create_database("crashme") == url  # still there, not recreated
    assert not pg.base_dir.exists()


def _fake_service(tmp_path: Path, body: str) -> Path:
    package = tmp_path / "fakesvc"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(textwrap.dedent(body))
    return tmp_path


HEALTHY_SERVICE = """
    import http.server, os

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"ok")

    print("fake service listening", flush=True)
    http.server.HTTPServer(("127.0.0.1", int(os.environ["FAKE_PORT"])), Handler).serve_forever()
"""


def test_service_process_waits_for_health_and_terminates(tmp_path: Path) -> None:
    cwd = _fake_service(tmp_path, HEALTHY_SERVICE)
    port = free_port()
    svc = ServiceProcess("fake", {"FAKE_PORT": str(port)}, port, tmp_path / "logs" / "fake.log",
                         module="fakesvc", cwd=cwd)
    with svc:
        assert svc.is_running
        pid = svc.pid
    assert not svc.is_running
    assert svc.returncode is not None
    assert not Path(f"/proc/{pid}").exists()
    assert "fake service listening" in svc.log_tail()


def test_service_process_reports_a_crash_with_its_log(tmp_path: Path) -> None:
    cwd = _fake_service(tmp_path, 'raise SystemExit("boom: no config")\n')
    svc = ServiceProcess("fake", {}, free_port(), tmp_path / "fake.log", module="fakesvc", cwd=cwd)
    svc.start()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="boom: no config"):
        svc.wait_healthy(timeout=30)
    assert time.monotonic() - started < 20
    svc.terminate()


def test_service_process_runs_the_venv_python(tmp_path: Path) -> None:
    cwd = _fake_service(tmp_path, "import sys; print(sys.executable); raise SystemExit(3)\n")
    svc = ServiceProcess("fake", {}, free_port(), tmp_path / "fake.log", module="fakesvc", cwd=cwd)
    svc.start()
    deadline = time.monotonic() + 20
    while svc.is_running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert svc.returncode == 3
    assert os.path.realpath(sys.executable) in [os.path.realpath(line) for line in svc.log_tail().splitlines()]
