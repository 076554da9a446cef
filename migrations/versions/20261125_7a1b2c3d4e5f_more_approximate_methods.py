"""More approximate methods: l1-sparse, prune-then-unlearn, SalUn, RBM, Blindspot, Gaussian
fine-tuning, LAF and concept poisoning join the values `models.approximate_method` may hold

Revision ID: 7a1b2c3d4e5f
Revises: 6f8a0b2c3d4e
Create Date: 2026-11-25 19:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7a1b2c3d4e5f"
down_revision: str | None = "6f8a0b2c3d4e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = ("ssd", "iau", "finetune", "gradient_ascent", "random_labels")
AFTER = (
    *BEFORE,
    "l1_sparse",
    "prune_then_unlearn",
    "salun",
    "rbm",
    "blindspot",
    "gaussian_finetune",
    "laf",
    "concept_poisoning",
)


def _allow(methods: Sequence[str]) -> None:
    values = ", ".join(repr(m) for m in methods)
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_constraint("approximatemethod", type_="check")
        batch_op.create_check_constraint("approximatemethod", f"approximate_method IN ({values})")


def upgrade() -> None:
    _allow(AFTER)


def downgrade() -> None:
    models = sa.table("models", sa.column("approximate_method", sa.String))
    column = models.c.approximate_method
    op.execute(models.update().where(column.not_in(BEFORE)).values(approximate_method="ssd"))
    _allow(BEFORE)
