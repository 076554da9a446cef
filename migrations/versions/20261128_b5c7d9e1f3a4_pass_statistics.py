"""Fast approximate passes: each trained chain's pass statistics are stored (`layer_statistics`),
and `models.approximate_method` may be `suppress_class`, `refit_head` or `auto`

Revision ID: b5c7d9e1f3a4
Revises: a4b6c8d0e2f3
Create Date: 2026-11-28 13:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b5c7d9e1f3a4"
down_revision: str | None = "a4b6c8d0e2f3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

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
)
AFTER = (*BEFORE, "suppress_class", "refit_head", "auto")


def _allow(methods: Sequence[str]) -> None:
    values = ", ".join(repr(m) for m in methods)
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_constraint("approximatemethod", type_="check")
        batch_op.create_check_constraint("approximatemethod", f"approximate_method IN ({values})")


def upgrade() -> None:
    _allow(AFTER)
    op.create_table(
        "layer_statistics",
        sa.Column("layer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("artifact_ref", sa.String(length=500), nullable=False),
        sa.Column("sample_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["layer_id"],
            ["layers.id"],
            name=op.f("fk_layer_statistics_layer_id_layers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("layer_id", name=op.f("pk_layer_statistics")),
    )


def downgrade() -> None:
    op.drop_table("layer_statistics")
    models = sa.table("models", sa.column("approximate_method", sa.String))
    column = models.c.approximate_method
    op.execute(models.update().where(column.not_in(BEFORE)).values(approximate_method="ssd"))
    _allow(BEFORE)
