"""Alembic environment shared by every service; revisions live in services/<name>/migrations/."""

from alembic import context

from services.runtime.migrations import run_migrations_online

run_migrations_online(context, context.config.attributes.get("target_metadata"))
