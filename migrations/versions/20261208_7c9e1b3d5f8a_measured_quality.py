"""Measured quality, and the deleted samples kept sealed: an evaluation split (`samples.split`; an evaluation sample has no shard and
no slice), the grading opt-in (`models.grade_approximations`), measurements of what a model
serves with its outputs (`quality_measurements`), grades of approximate passes (`pass_grades`),
the job that measures and grades (`jobs.kind` may be `measure_quality`), and the payloads a
deletion keeps for its approximate pass (or its grading) sealed in `kept_samples` instead of
left in `sample_payloads` (an upgrade with kept payloads leaves them where they are: the pass
that reads them finds none sealed and is passed over, and they are purged on its deadline)

SQLite recreates `samples` and `jobs` to change their columns and CHECK constraints;
`migrations/env.py` turns foreign keys off for it and checks them afterwards.

Revision ID: 7c9e1b3d5f8a
Revises: 5b7d9f1a3c6e
Create Date: 2026-12-08 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "7c9e1b3d5f8a"
down_revision: str | None = "5b7d9f1a3c6e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS_BEFORE = ("train", "retrain", "approximate", "exactness_audit")
KINDS_AFTER = (*KINDS_BEFORE, "measure_quality")
PLACED = "(split = 'eval') = (shard_id IS NULL) AND (split = 'eval') = (slice_id IS NULL)"
BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _allow(kinds: Sequence[str]) -> None:
    values = ", ".join(repr(k) for k in kinds)
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint("jobkind", type_="check")
        batch_op.create_check_constraint("jobkind", f"kind IN ({values})")


def upgrade() -> None:
    _allow(KINDS_AFTER)
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "split",
                sa.Enum("train", "eval", name="split", native_enum=False, length=32),
                nullable=False,
                server_default="train",
            )
        )
        batch_op.alter_column("shard_id", existing_type=sa.Uuid(), nullable=True)
        batch_op.alter_column("slice_id", existing_type=sa.Uuid(), nullable=True)
        batch_op.create_check_constraint("split", "split IN ('train', 'eval')")
        batch_op.create_check_constraint("placed_unless_eval", PLACED)
        batch_op.create_index(
            "ix_samples_model_id_split_deleted", ["model_id", "split", "deleted"], unique=False
        )
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.alter_column("split", server_default=None)
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "grade_approximations", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.alter_column("grade_approximations", server_default=None)
    op.create_table(
        "quality_measurements",
        sa.Column("id", BIGINT, autoincrement=True, nullable=False),
        sa.Column("model_id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("serving_generation", sa.BigInteger(), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("n_eval", sa.Integer(), nullable=False),
        sa.Column("live_shards", sa.Float(), nullable=False),
        sa.Column("served_depth", sa.Float(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("outputs", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_quality_measurements_job_id_jobs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name=op.f("fk_quality_measurements_model_id_models"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quality_measurements")),
    )
    op.create_index(
        "ix_quality_measurements_model_id_id", "quality_measurements", ["model_id", "id"]
    )
    op.create_table(
        "pass_grades",
        sa.Column("id", BIGINT, autoincrement=True, nullable=False),
        sa.Column("model_id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("pass_job_id", sa.Uuid(), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("graded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("gap", sa.Float(), nullable=False),
        sa.Column("cost_share", sa.Float(), nullable=False),
        sa.Column("with_deleted", sa.Boolean(), nullable=False),
        sa.Column("grade", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_pass_grades_job_id_jobs"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name=op.f("fk_pass_grades_model_id_models"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["pass_job_id"],
            ["jobs.id"],
            name=op.f("fk_pass_grades_pass_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pass_grades")),
        sa.UniqueConstraint("pass_job_id", name=op.f("uq_pass_grades_pass_job_id")),
    )
    op.create_index("ix_pass_grades_model_id_method", "pass_grades", ["model_id", "method"])
    op.create_table(
        "kept_samples",
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("model_id", sa.Uuid(), nullable=False),
        sa.Column("n_samples", sa.Integer(), nullable=False),
        sa.Column("data_key", sa.LargeBinary(), nullable=False),
        sa.Column("key_wrapped", sa.Boolean(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("for_grading", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name=op.f("fk_kept_samples_model_id_models"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["deletion_requests.id"],
            name=op.f("fk_kept_samples_request_id_deletion_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_kept_samples")),
    )
    op.create_index("ix_kept_samples_model_id", "kept_samples", ["model_id"])


def downgrade() -> None:
    op.drop_index("ix_kept_samples_model_id", table_name="kept_samples")
    op.drop_table("kept_samples")
    op.drop_index("ix_pass_grades_model_id_method", table_name="pass_grades")
    op.drop_table("pass_grades")
    op.drop_index("ix_quality_measurements_model_id_id", table_name="quality_measurements")
    op.drop_table("quality_measurements")
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("grade_approximations")
    # Evaluation samples have no place in the older schema (every sample is placed there).
    samples = sa.table("samples", sa.column("split", sa.String))
    op.execute(samples.delete().where(samples.c.split == "eval"))
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.drop_index("ix_samples_model_id_split_deleted")
        batch_op.drop_constraint("placed_unless_eval", type_="check")
        batch_op.drop_constraint("split", type_="check")
        batch_op.alter_column("slice_id", existing_type=sa.Uuid(), nullable=False)
        batch_op.alter_column("shard_id", existing_type=sa.Uuid(), nullable=False)
        batch_op.drop_column("split")
    jobs = sa.table("jobs", sa.column("kind", sa.String))
    op.execute(jobs.delete().where(jobs.c.kind.not_in(KINDS_BEFORE)))
    _allow(KINDS_BEFORE)
