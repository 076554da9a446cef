"""Keyed identifier hashes: a secret per tenant (`tenant_secrets`), and each deletion request
states the scheme of its hashes (`deletion_requests.hash_scheme`)

Every existing tenant gets a fresh random secret and is marked `legacy_id_hashes`: samples it
deleted so far are still named `deleted:<sha256>`. Existing deletion requests keep their plain
SHA-256 hashes and say so (`hash_scheme` = `sha256`, also the column's server default, which
labels the rows an API process that is not yet upgraded writes); new ones are `hmac-sha256`.

On SQLite, no table is rebuilt (a rebuild of a referenced table with foreign keys on would
cascade into its children): the column is added, and dropped, with plain ALTER TABLE.
Downgrading forgets which requests were keyed, and the secrets with them.

Revision ID: d7f9a1b3c5e7
Revises: b5c7d9e1f3a4
Create Date: 2026-11-28 16:00:00.000000
"""

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "d7f9a1b3c5e7"
down_revision: str | None = "b5c7d9e1f3a4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SECRET_BYTES = 32
SCHEMES = ("sha256", "hmac-sha256")
CHECK = f"hash_scheme IN ({', '.join(repr(s) for s in SCHEMES)})"


def upgrade() -> None:
    op.create_table(
        "tenant_secrets",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("identifier_secret", sa.LargeBinary(length=SECRET_BYTES), nullable=False),
        sa.Column("legacy_id_hashes", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_tenant_secrets_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant_secrets")),
    )
    bind = op.get_bind()
    tenants = sa.table("tenants", sa.column("id", sa.Uuid()))
    secrets_table = sa.table(
        "tenant_secrets",
        sa.column("tenant_id", sa.Uuid()),
        sa.column("identifier_secret", sa.LargeBinary()),
        sa.column("legacy_id_hashes", sa.Boolean()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    # SQLite stores naive UTC (service.db.models.base.UTCDateTime); PostgreSQL an aware time.
    now = datetime.now(UTC)
    if bind.dialect.name == "sqlite":
        now = now.replace(tzinfo=None)
    rows = [
        {
            "tenant_id": tenant_id,
            "identifier_secret": secrets.token_bytes(SECRET_BYTES),
            "legacy_id_hashes": True,
            "created_at": now,
        }
        for tenant_id in bind.scalars(sa.select(tenants.c.id))
    ]
    if rows:
        bind.execute(secrets_table.insert(), rows)

    if bind.dialect.name == "sqlite":
        op.execute(
            "ALTER TABLE deletion_requests ADD COLUMN hash_scheme VARCHAR(32) "
            "DEFAULT 'sha256' NOT NULL "
            f"CONSTRAINT ck_deletion_requests_hashscheme CHECK ({CHECK})"
        )
    else:
        op.add_column(
            "deletion_requests",
            sa.Column("hash_scheme", sa.String(32), nullable=False, server_default="sha256"),
        )
        op.create_check_constraint(
            op.f("ck_deletion_requests_hashscheme"), "deletion_requests", CHECK
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE deletion_requests DROP COLUMN hash_scheme")
    else:
        op.drop_column("deletion_requests", "hash_scheme")  # its CHECK goes with it
    op.drop_table("tenant_secrets")
