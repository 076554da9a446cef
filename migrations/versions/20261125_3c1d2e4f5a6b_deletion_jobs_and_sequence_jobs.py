"""Deletion-job links, sequence jobs (parent, sequence, from_stage), deletion generation

Revision ID: 3c1d2e4f5a6b
Revises: 777f3a2b7faa
Create Date: 2026-11-25 12:38:00.383744
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3c1d2e4f5a6b"
down_revision: str | None = "777f3a2b7faa"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deletion_jobs",
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_deletion_jobs_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["deletion_requests.id"],
            name=op.f("fk_deletion_jobs_request_id_deletion_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("request_id", "job_id", name=op.f("pk_deletion_jobs")),
    )
    with op.batch_alter_table("deletion_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deletion_jobs_job_id"), ["job_id"], unique=False)

    with op.batch_alter_table("deletion_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("serving_generation", sa.BigInteger(), nullable=True))

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("sequence_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("from_stage", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_parent_id"), ["parent_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_sequence_id"), ["sequence_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_jobs_sequence_id_sequences"),
            "sequences",
            ["sequence_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_jobs_parent_id_jobs"), "jobs", ["parent_id"], ["id"], ondelete="CASCADE"
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_jobs_parent_id_jobs"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_jobs_sequence_id_sequences"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_jobs_sequence_id"))
        batch_op.drop_index(batch_op.f("ix_jobs_parent_id"))
        batch_op.drop_column("from_stage")
        batch_op.drop_column("sequence_id")
        batch_op.drop_column("parent_id")

    with op.batch_alter_table("deletion_requests", schema=None) as batch_op:
        batch_op.drop_column("serving_generation")

    with op.batch_alter_table("deletion_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deletion_jobs_job_id"))

    op.drop_table("deletion_jobs")
