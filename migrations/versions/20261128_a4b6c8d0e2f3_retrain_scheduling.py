"""S3T-aware retraining: outbox messages carry a priority; retrains of orders that need not run
yet are parked with a reason and a time

Revision ID: a4b6c8d0e2f3
Revises: 9c3d5e7f8a01
Create Date: 2026-11-28 11:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a4b6c8d0e2f3"
down_revision: str | None = "9c3d5e7f8a01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="5"))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deferred_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("deferred_reason", sa.String(length=500), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_jobs_deferred_until"), ["deferred_until"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_deferred_until"))
        batch_op.drop_column("deferred_reason")
        batch_op.drop_column("deferred_until")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("priority")
