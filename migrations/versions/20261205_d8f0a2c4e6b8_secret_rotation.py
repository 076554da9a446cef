"""Rotatable identifier secrets: `tenant_secrets.secret_version`, the retired secrets in
`tenant_old_secrets`, and the version each deletion request was hashed with (every existing row
was hashed with version 1, the only one so far)

Revision ID: d8f0a2c4e6b8
Revises: c5e7a9b1d3f4
Create Date: 2026-12-05 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d8f0a2c4e6b8"
down_revision: str | None = "c5e7a9b1d3f4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SECRET_BYTES = 32  # frozen here: the migration must not change with the code


def upgrade() -> None:
    op.create_table(
        "tenant_old_secrets",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("identifier_secret", sa.LargeBinary(length=SECRET_BYTES), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_tenant_old_secrets_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "version", name=op.f("pk_tenant_old_secrets")),
    )
    # Plain ALTER TABLE (SQLite has it for a column with a constant default): a batch rebuild
    # would turn deletion_requests' column CHECKs into table ones, which SQLite then refuses
    # to drop with their column on an older migration's downgrade.
    for table in ("tenant_secrets", "deletion_requests"):
        op.add_column(
            table, sa.Column("secret_version", sa.Integer(), server_default="1", nullable=False)
        )


def downgrade() -> None:
    for table in ("deletion_requests", "tenant_secrets"):
        op.drop_column(table, "secret_version")
    op.drop_table("tenant_old_secrets")
