"""Causal language models: `models.task` may be `causal_lm`, and a sample payload may hold a
conversation (`sample_payloads.messages`, JSON `[[role, content], ...]`) instead of an input and
a label: a conversation is both

SQLite recreates `models` and `sample_payloads` to change their CHECK constraints;
`migrations/env.py` turns foreign keys off for it and checks them afterwards.

Revision ID: 5b7d9f1a3c6e
Revises: 41912499a0e0
Create Date: 2026-12-07 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "5b7d9f1a3c6e"
down_revision: str | None = "41912499a0e0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = ("classification", "regression")
AFTER = (*BEFORE, "causal_lm")
INPUT = "text IS NOT NULL OR features IS NOT NULL OR image IS NOT NULL"
LABEL = "label_index IS NOT NULL OR target IS NOT NULL"


def _allow(tasks: Sequence[str]) -> None:
    values = ", ".join(repr(t) for t in tasks)
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_constraint("task", type_="check")
        batch_op.create_check_constraint("task", f"task IN ({values})")


def upgrade() -> None:
    _allow(AFTER)
    with op.batch_alter_table("sample_payloads", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "messages",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.drop_constraint(batch_op.f("ck_sample_payloads_has_input"), type_="check")
        batch_op.drop_constraint(batch_op.f("ck_sample_payloads_has_label"), type_="check")
        batch_op.create_check_constraint("has_input", f"{INPUT} OR messages IS NOT NULL")
        batch_op.create_check_constraint("has_label", f"{LABEL} OR messages IS NOT NULL")


def downgrade() -> None:
    # A causal LM has no place in the older schema, and dropping one here would leave its
    # lineage, jobs and artifacts behind: the operator deletes those models first.
    models = sa.table("models", sa.column("task", sa.String))
    left = op.get_bind().execute(
        sa.select(sa.func.count()).select_from(models).where(models.c.task == "causal_lm")
    )
    if left.scalar_one():
        raise RuntimeError("delete the causal_lm models before downgrading below 5b7d9f1a3c6e")
    with op.batch_alter_table("sample_payloads", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_sample_payloads_has_label"), type_="check")
        batch_op.drop_constraint(batch_op.f("ck_sample_payloads_has_input"), type_="check")
        batch_op.create_check_constraint("has_input", INPUT)
        batch_op.create_check_constraint("has_label", LABEL)
    with op.batch_alter_table("sample_payloads", schema=None) as batch_op:
        batch_op.drop_column("messages")
    _allow(BEFORE)
