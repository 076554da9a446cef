"""Approximate unlearning: model policy and method, approximate layers, payload purge deadline

Revision ID: 5e7f9a1b2c3d
Revises: 3c1d2e4f5a6b
Create Date: 2026-11-25 15:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5e7f9a1b2c3d"
down_revision: str | None = "3c1d2e4f5a6b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POLICIES = ("exact", "approximate_then_exact", "auto")
METHODS = ("ssd", "iau", "finetune", "gradient_ascent", "random_labels")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("unlearning_policy", sa.String(32), nullable=False, server_default="exact")
        )
        batch_op.add_column(
            sa.Column("approximate_method", sa.String(32), nullable=False, server_default="ssd")
        )
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.create_check_constraint("unlearningpolicy", _in("unlearning_policy", POLICIES))
        batch_op.create_check_constraint("approximatemethod", _in("approximate_method", METHODS))

    with op.batch_alter_table("layers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("approximate", sa.Boolean(), nullable=False, server_default=sa.false())
        )

    with op.batch_alter_table("deletion_requests", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("payloads_purge_by", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("payloads_purged_at", sa.DateTime(timezone=True), nullable=True)
        )

    op.create_table(
        "layer_deletions",
        sa.Column("layer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["layer_id"],
            ["layers.id"],
            name=op.f("fk_layer_deletions_layer_id_layers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["deletion_requests.id"],
            name=op.f("fk_layer_deletions_request_id_deletion_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("layer_id", "request_id", name=op.f("pk_layer_deletions")),
    )
    with op.batch_alter_table("layer_deletions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_layer_deletions_request_id"), ["request_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("layer_deletions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_layer_deletions_request_id"))
    op.drop_table("layer_deletions")

    with op.batch_alter_table("deletion_requests", schema=None) as batch_op:
        batch_op.drop_column("payloads_purged_at")
        batch_op.drop_column("payloads_purge_by")

    with op.batch_alter_table("layers", schema=None) as batch_op:
        batch_op.drop_column("approximate")

    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_models_approximatemethod"), type_="check")
        batch_op.drop_constraint(batch_op.f("ck_models_unlearningpolicy"), type_="check")
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("approximate_method")
        batch_op.drop_column("unlearning_policy")
