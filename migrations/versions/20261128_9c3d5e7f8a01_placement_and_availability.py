"""Subject-aware placement and availability: models record their placement policy and the
fewest live shards they answer from

Models created before carry on with what they were trained with: `sample` placement (each
sample by its own id) and one live shard.

Revision ID: 9c3d5e7f8a01
Revises: 8b2c4d6e7f90
Create Date: 2026-11-28 11:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9c3d5e7f8a01"
down_revision: str | None = "8b2c4d6e7f90"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "placement",
                sa.Enum(
                    "sample",
                    "subject",
                    name="placementpolicy",
                    native_enum=False,
                    create_constraint=True,
                    length=32,
                ),
                nullable=False,
                server_default="sample",
            )
        )
        batch_op.add_column(
            sa.Column("min_live_shards", sa.Integer(), nullable=False, server_default="1")
        )
        batch_op.create_check_constraint(
            "min_live_shards_range", "min_live_shards >= 1 AND min_live_shards <= n_shards"
        )


def downgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_models_min_live_shards_range"), type_="check")
        batch_op.drop_constraint(batch_op.f("ck_models_placementpolicy"), type_="check")
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("min_live_shards")
        batch_op.drop_column("placement")
