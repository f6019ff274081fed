"""idempotency keys are scoped to the caller who sent them

Revision ID: 3feb32e35c6a
Revises: 05b4e528521a
Create Date: 2026-12-01 11:23:40.390242

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

import services.runtime.db

# revision identifiers, used by Alembic.
revision: str = '3feb32e35c6a'
down_revision: Union[str, Sequence[str], None] = '05b4e528521a'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


# Rows stored before keys were scoped keep scope "" and still answer their callers' retries
# (their body hash names the reporter or city app); see repository.get_idempotency_key.


def _keys_table(name: str, *primary_key: str) -> None:
    columns = [
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("body_hash", sa.String(length=64), nullable=False),
        sa.Column("incident_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", services.runtime.db.UTCDateTime(timezone=True), nullable=False),
    ]
    if "scope" in primary_key:
        columns.insert(0, sa.Column("scope", sa.String(length=200), server_default="", nullable=False))
    op.create_table(name, *columns, sa.PrimaryKeyConstraint(*primary_key, name="idempotency_keys_pkey"))


def _sqlite_rebuild(*primary_key: str, scope_select: str) -> None:
    # SQLite cannot change a primary key in place; a batch copy would keep the old one's flag.
    _keys_table("_idempotency_keys_new", *primary_key)
    columns = "key, body_hash, incident_id, created_at"
    target = f"scope, {columns}" if "scope" in primary_key else columns
    op.execute(f"INSERT INTO _idempotency_keys_new ({target}) SELECT {scope_select}{columns} FROM idempotency_keys")
    op.drop_table("idempotency_keys")
    op.rename_table("_idempotency_keys_new", "idempotency_keys")


def upgrade() -> None:
    """Upgrade schema: the primary key becomes (scope, key)."""
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_rebuild("scope", "key", scope_select="'', ")
        return
    op.add_column("idempotency_keys", sa.Column("scope", sa.String(length=200), server_default="", nullable=False))
    op.drop_constraint("idempotency_keys_pkey", "idempotency_keys", type_="primary")
    op.create_primary_key("idempotency_keys_pkey", "idempotency_keys", ["scope", "key"])


def downgrade() -> None:
    """Downgrade schema: keys global again; of a key used by several callers, the oldest stays."""
    op.execute(
        "DELETE FROM idempotency_keys WHERE EXISTS (SELECT 1 FROM idempotency_keys AS older"
        " WHERE older.key = idempotency_keys.key AND (older.created_at < idempotency_keys.created_at"
        " OR (older.created_at = idempotency_keys.created_at AND older.scope < idempotency_keys.scope)))"
    )
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_rebuild("key", scope_select="")
        return
    op.drop_constraint("idempotency_keys_pkey", "idempotency_keys", type_="primary")
    op.drop_column("idempotency_keys", "scope")
    op.create_primary_key("idempotency_keys_pkey", "idempotency_keys", ["key"])
