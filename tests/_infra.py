"""Pytest plugin: real Kafka and PostgreSQL for the integration and e2e tests.

Each backing service comes from, in order: an environment variable naming an
existing server, a Docker engine (testcontainers) if one answers, or local
processes started by infra.local (Kafka jars from Maven, Debian's PostgreSQL).
If none works the tests needing it are skipped, or fail when CI is set.
Set GRIDWHISTLE_TEST_DOCKER=0 to never try Docker.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import subprocess
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from infra.local import (
    TOPIC_CATALOGUE,
    LocalKafka,
    LocalPostgres,
    run_sync,
    create_topics,
    ensure_kafka_jars,
    free_port,
)

__all__ = [
    "KafkaServer",
    "PostgresServer",
    "create_test_topics",
    "delete_test_topics",
    "in_ci",
    "unavailable",
]


def in_ci() -> bool:
    """True when running under CI (the CI env var is set and not false/0)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(message: str) -> NoReturn:
    """Skip the test because infrastructure is missing, or fail it under CI, where it must exist."""
    if in_ci():
        pytest.fail(f"{message} (CI is set, so this is an error rather than a skip)", pytrace=False)
    pytest.skip(message)


@functools.lru_cache(maxsize=1)
def docker_available() -> bool:
    """True if a Docker engine answers `docker info`."""
    if os.environ.get("GRIDWHISTLE_TEST_DOCKER", "").strip().lower() in ("0", "false", "no"):
        return False
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


# --------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------


@dataclasses.dataclass
class KafkaServer:
    """The session's Kafka: its bootstrap string, and the LocalKafka if we run it (for chaos tests)."""

    bootstrap: str
    source: str  # "env", "docker" or "local"
    local: LocalKafka | None = None


@pytest.fixture(scope="session")
def kafka_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaServer]:
    """A Kafka cluster for the whole session (env KAFKA_BOOTSTRAP_SERVERS, Docker, or a local broker)."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external:
        yield KafkaServer(external, "env")
        return

    problems: list[str] = []
    if docker_available():
        container = None
        try:
            try:
                from testcontainers.community.kafka import KafkaContainer
            except ImportError:  # older testcontainers layouts
                from testcontainers.kafka import KafkaContainer
            container = KafkaContainer().with_kraft()
            container.start()
            bootstrap = container.get_bootstrap_server()
        except Exception as exc:  # fall back to a local broker
            problems.append(f"docker: {exc}")
            if container is not None:
                _quietly(container.stop)
        else:
            try:
                yield KafkaServer(bootstrap, "docker")
            finally:
                container.stop()
            return

    broker = None
    try:
        ensure_kafka_jars()
        broker = LocalKafka(tmp_path_factory.mktemp("kafka"), port=free_port())
        broker.start()
        broker.wait_ready(timeout=120)
    except Exception as exc:
        if broker is not None:
            broker.stop()
        broker = None
        problems.append(f"local broker: {exc}")
    if broker is None:
        unavailable(
            "no Kafka for the integration tests: set KAFKA_BOOTSTRAP_SERVERS, run a Docker engine, "
            "or install Java 17 + Maven for the local broker.\n" + "\n".join(problems)
        )
    try:
        yield KafkaServer(broker.bootstrap, "local", broker)
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_server: KafkaServer) -> str:
    """Bootstrap servers string of the session's Kafka, e.g. '127.0.0.1:41234'."""
    return kafka_server.bootstrap


@pytest.fixture
def topic_prefix() -> str:
    """A topic-name prefix unique to this test, e.g. 't3f9a1c2e.'."""
    return f"t{uuid.uuid4().hex[:8]}."


async def create_test_topics(
    bootstrap: str, prefix: str, catalogue: Path = TOPIC_CATALOGUE
) -> list[str]:
    """Create every catalogue topic under prefix (idempotent); return the full names in catalogue order."""
    return await create_topics(bootstrap, catalogue, prefix)


async def delete_test_topics(bootstrap: str, names: list[str]) -> None:
    """Delete topics (best effort), so a long session does not pile up partitions."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        await admin.start()
        await admin.delete_topics(names)
    except Exception:
        pass
    finally:
        await _async_quietly(admin.close)


@pytest.fixture
async def kafka_topics(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[dict[str, str]]:
    """The catalogue created under this test's prefix: {catalogue name: real topic name}; deleted after."""
    names = await create_test_topics(kafka_bootstrap, topic_prefix)
    yield {name[len(topic_prefix):]: name for name in names}
    await delete_test_topics(kafka_bootstrap, names)


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------

_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PostgresServer:
    """A PostgreSQL server the tests may create databases in."""

    def __init__(self, source: str, admin_url: str | None = None, local: LocalPostgres | None = None) -> None:
        self.source = source  # "env", "docker" or "local"
        self.local = local
        self._admin_url = admin_url

    @property
    def admin_url(self) -> str:
        """SQLAlchemy URL of the maintenance database."""
        return self.local.admin_url if self.local else _with_driver(self._admin_url or "", None)

    def url(self, database: str) -> str:
        """SQLAlchemy (asyncpg) URL of database on this server."""
        if self.local:
            return self.local.url(database)
        parts = urllib.parse.urlsplit(self._admin_url or "")
        return _with_driver(urllib.parse.urlunsplit(parts._replace(path="/" + database)), "asyncpg")

    def create_database(self, name: str) -> str:
        """Create database name and return its SQLAlchemy (asyncpg) URL."""
        if not _DB_NAME.match(name):
            raise ValueError(f"invalid database name {name!r}")
        if self.local:
            return self.local.create_database(name)
        run_sync(lambda: self._admin(f'CREATE DATABASE "{name}"'))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database name, disconnecting its clients."""
        if not _DB_NAME.match(name):
            raise ValueError(f"invalid database name {name!r}")
        if self.local:
            self.local.drop_database(name)
        else:
            run_sync(lambda: self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    async def _admin(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(_with_driver(self._admin_url or "", None))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()


def _with_driver(url: str, driver: str | None) -> str:
    # asyncpg wants postgresql://, SQLAlchemy wants postgresql+asyncpg://.
    scheme, sep, rest = url.partition("://")
    base = scheme.split("+", 1)[0]
    if base == "postgres":
        base = "postgresql"
    return f"{base}+{driver}{sep}{rest}" if driver else f"{base}{sep}{rest}"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session (env TEST_POSTGRES_URL, Docker, or a local cluster)."""
    external = os.environ.get("TEST_POSTGRES_URL", "").strip()
    if external:
        yield PostgresServer("env", admin_url=external)
        return

    problems: list[str] = []
    if docker_available():
        container = None
        try:
            try:
                from testcontainers.community.postgres import PostgresContainer
            except ImportError:
                from testcontainers.postgres import PostgresContainer
            container = PostgresContainer("postgres:16-alpine", driver=None)
            container.start()
            admin_url = container.get_connection_url()
        except Exception as exc:
            problems.append(f"docker: {exc}")
            if container is not None:
                _quietly(container.stop)
        else:
            try:
                yield PostgresServer("docker", admin_url=admin_url)
            finally:
                container.stop()
            return

    local = None
    try:
        local = LocalPostgres()
        local.start()
    except Exception as exc:
        if local is not None:
            local.cleanup()
        local = None
        problems.append(f"local cluster: {exc}")
    if local is None:
        unavailable(
            "no PostgreSQL for the integration tests: set TEST_POSTGRES_URL, run a Docker engine, "
            "or install PostgreSQL's server binaries (Debian: apt-get install -y postgresql).\n"
            + "\n".join(problems)
        )
    try:
        yield PostgresServer("local", local=local)
    finally:
        local.cleanup()


@pytest.fixture
def pg_url_factory(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """Callable(label='') -> URL of a new, uniquely named database; all are dropped after the test."""
    created: list[str] = []
    stem = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:30].strip("_")

    def make(label: str = "") -> str:
        suffix = re.sub(r"[^a-z0-9]+", "_", label.lower())[:12]
        name = "_".join(part for part in ("t", stem, suffix, uuid.uuid4().hex[:8]) if part)
        url = postgres_server.create_database(name)
        created.append(name)
        return url

    yield make
    for name in created:
        _quietly(postgres_server.drop_database, name)


@pytest.fixture
def pg_url(pg_url_factory: Callable[..., str]) -> str:
    """SQLAlchemy URL (postgresql+asyncpg://...) of a fresh database for this test."""
    return pg_url_factory()


# --------------------------------------------------------------------------


def _quietly(func: Callable[..., Any], *args: Any) -> None:
    try:
        func(*args)
    except Exception:
        pass


async def _async_quietly(func: Callable[[], Any]) -> None:
    try:
        await func()
    except Exception:
        pass
