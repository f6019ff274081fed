"""Schema migrations with Alembic: each service keeps its own revisions in `services/<name>/migrations/`.

One Alembic environment (`services/runtime/alembic/`) serves all; services run `upgrade head` on start (under a PostgreSQL advisory lock, so replicas starting
together do not race). `python -m services.runtime.migrations revision SERVICE -m MESSAGE`
autogenerates a revision from the service's tables; a test fails when a service's tables and its
migrations disagree, so a schema change without a migration cannot land.
"""

from __future__ import annotations

import argparse
import tempfile
import zlib
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

SERVICES_DIR = Path(__file__).resolve().parent.parent
SCRIPT_DIR = Path(__file__).resolve().parent / "alembic"


def versions_dir(service: str) -> Path:
    """Where a service's revisions live."""
    return SERVICES_DIR / service / "migrations"


def alembic_config(service: str, connection: Connection | None = None) -> Config:
    """An Alembic config for one service, optionally bound to an open connection."""
    config = Config()
    # One shared environment; each service has its own, independent revision history.
    config.set_main_option("script_location", str(SCRIPT_DIR))
    config.set_main_option("version_locations", str(versions_dir(service)))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_table", "alembic_version")
    config.attributes["service"] = service
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, service: str, metadata: MetaData) -> None:
    existing = set(inspect(connection).get_table_names())
    own = set(metadata.tables)
    if "alembic_version" not in existing and own and own <= existing:
        # A database created before migrations existed (create_all): adopt it as the baseline.
        command.stamp(alembic_config(service, connection), "head")
        return
    command.upgrade(alembic_config(service, connection), "head")


async def migrate(engine: AsyncEngine, service: str, metadata: MetaData) -> None:
    """Bring the service's database to the newest revision."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Transaction-scoped: released at commit, so a crashed migrator never holds it.
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(f"migrate-{service}".encode())})
        await conn.run_sync(_upgrade, service, metadata)


def schema_differences(connection: Connection, metadata: MetaData) -> list[Any]:
    """What autogenerate would change to make the database match the tables (empty = in sync)."""
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return compare_metadata(context, metadata)


def run_migrations_online(context: Any, target_metadata: MetaData | None = None) -> None:
    """Body of every service's env.py: run on the connection the caller handed over."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through services.runtime.migrations (a connection is required)")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
        user_module_prefix="services.runtime.db.",
    )
    with context.begin_transaction():
        context.run_migrations()


def service_metadata(service: str) -> MetaData:
    """The full table set of a service (its own tables plus the runtime's), built from its app."""
    import importlib

    app_module = importlib.import_module(f"services.{service}.app")
    settings_module = importlib.import_module(f"services.{service}.settings")
    settings_cls = next(
        v for k, v in vars(settings_module).items() if k.endswith("Settings") and k != "ServiceSettings"
    )
    with tempfile.TemporaryDirectory() as tmp:
        # Only the tables are wanted: the app never starts, so the development secret is fine.
        settings = settings_cls(database_url=f"sqlite+aiosqlite:///{tmp}/x.db", auth_dev_mode=True)
        app = app_module.create_app(settings)
        return app.state.runtime.metadata


def _revision(service: str, message: str) -> None:
    from sqlalchemy import create_engine as create_sync_engine

    metadata = service_metadata(service)
    versions_dir(service).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_sync_engine(f"sqlite:///{tmp}/db.sqlite")
        with engine.begin() as connection:
            config = alembic_config(service, connection)
            command.upgrade(config, "head")
            config.attributes["target_metadata"] = metadata
            command.revision(config, message=message, autogenerate=True)


def main(argv: list[str] | None = None) -> int:
    """CLI: `revision SERVICE -m MESSAGE` autogenerates a migration for a service."""
    parser = argparse.ArgumentParser(prog="python -m services.runtime.migrations")
    sub = parser.add_subparsers(dest="command", required=True)
    revision = sub.add_parser("revision", help="autogenerate a revision from the service's tables")
    revision.add_argument("service")
    revision.add_argument("-m", "--message", required=True)
    args = parser.parse_args(argv)
    _revision(args.service, args.message)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
