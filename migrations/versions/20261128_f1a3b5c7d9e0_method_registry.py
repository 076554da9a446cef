"""Method registry: `models.approximate_method` is plain text validated by the service against
`unlearning.approx.registry` (its CHECK constraint goes, so a new method needs no migration), and
`models.method_config` holds the model's validated config override for its method

Revision ID: f1a3b5c7d9e0
Revises: c6e8f0a2b4d6
Create Date: 2026-11-28 18:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "f1a3b5c7d9e0"
down_revision: str | None = "c6e8f0a2b4d6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: What the CHECK constraint allowed before this revision (restored by the downgrade).
BEFORE = (
    "ssd",
    "iau",
    "finetune",
    "gradient_ascent",
    "random_labels",
    "l1_sparse",
    "prune_then_unlearn",
    "salun",
    "rbm",
    "blindspot",
    "gaussian_finetune",
    "laf",
    "concept_poisoning",
    "suppress_class",
    "refit_head",
    "auto",
)


def upgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_constraint("approximatemethod", type_="check")
        batch_op.add_column(
            sa.Column(
                "method_config",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )


def downgrade() -> None:
    models = sa.table("models", sa.column("approximate_method", sa.String))
    column = models.c.approximate_method
    # A method registered since has no place in the constraint: such models fall back to `auto`.
    op.execute(models.update().where(column.not_in(BEFORE)).values(approximate_method="auto"))
    values = ", ".join(repr(m) for m in BEFORE)
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("method_config")
        batch_op.create_check_constraint("approximatemethod", f"approximate_method IN ({values})")
