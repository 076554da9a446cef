"""Artifact collection: `collected_artifacts` records what was deleted from the store and when,
`layer_invalidations` which deletion invalidated a layer, and `layers.artifact_ref` is indexed
(the collector counts references by artifact)

Revision ID: c6e8f0a2b4d6
Revises: e8a0b2c4d6f8
Create Date: 2026-11-28 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c6e8f0a2b4d6"
down_revision: str | None = "e8a0b2c4d6f8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "collected_artifacts",
        sa.Column("artifact_ref", sa.String(length=500), nullable=False),
        sa.Column("collected_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("artifact_ref", name=op.f("pk_collected_artifacts")),
    )
    op.create_table(
        "layer_invalidations",
        sa.Column("layer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["layer_id"],
            ["layers.id"],
            name=op.f("fk_layer_invalidations_layer_id_layers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["deletion_requests.id"],
            name=op.f("fk_layer_invalidations_request_id_deletion_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("layer_id", name=op.f("pk_layer_invalidations")),
    )
    with op.batch_alter_table("layer_invalidations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_layer_invalidations_request_id"), ["request_id"], unique=False
        )
    with op.batch_alter_table("layers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_layers_artifact_ref"), ["artifact_ref"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("layers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_layers_artifact_ref"))
    with op.batch_alter_table("layer_invalidations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_layer_invalidations_request_id"))
    op.drop_table("layer_invalidations")
    op.drop_table("collected_artifacts")
