"""Compute profiles: each model records the profile that trains it; workers announce theirs

Models created before profiles existed were trained by CPU workers on torch 2.13.0, the only
kind of worker there was; they keep that profile, so their retrains stay bitwise exact.

Revision ID: 8b2c4d6e7f90
Revises: 7a1b2c3d4e5f
Create Date: 2026-11-28 10:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "8b2c4d6e7f90"
down_revision: str | None = "7a1b2c3d4e5f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EARLIER_PROFILE = "cpu-torch2.13.0"


def upgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("compute_profile", sa.String(length=64), nullable=True))
    op.execute(sa.text("UPDATE models SET compute_profile = :p").bindparams(p=EARLIER_PROFILE))
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.alter_column("compute_profile", existing_type=sa.String(64), nullable=False)
    op.create_table(
        "workers",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("compute_profile", sa.String(length=64), nullable=False),
        sa.Column(
            "queues", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_workers")),
    )
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_workers_compute_profile"), ["compute_profile"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_workers_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workers_expires_at"))
        batch_op.drop_index(batch_op.f("ix_workers_compute_profile"))
    op.drop_table("workers")
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("compute_profile")
