"""The base-model catalogue: `base_models` (a registered, hashed pretrained folder) and the base
model each model fine-tunes (`models.base_model_id`)

Every existing model was trained on the deployment's one backbone: the upgrade registers it
(`UNLEARN_BACKBONE_PATH`, default MiniLM-L6, under `UNLEARN_DEFAULT_BASE_MODEL`, with the digest
of its weight files) and points every model at it. A fresh database gets the same row, so the
default base model exists before the first model is created.

Revision ID: e1a3c5b7d9f2
Revises: d8f0a2c4e6b8
Create Date: 2026-12-06 10:00:00.000000
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "e1a3c5b7d9f2"
down_revision: str | None = "d8f0a2c4e6b8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def _default_row() -> dict[str, object]:
    """The deployment's backbone as a catalogue row, described from its folder (offline)."""
    from service.base_models.service import default_folder
    from service.settings import get_settings
    from unlearning.base_models import describe

    settings = get_settings()
    folder = default_folder(settings)
    described = describe(folder)
    return {
        "id": uuid.uuid4(),
        "name": settings.default_base_model,
        "family": described.family,
        "modality": described.modality,
        "uri": str(folder),
        "sha256": described.sha256,
        "n_layers": described.n_layers,
        "hidden_size": described.hidden_size,
        "default_targets": list(described.default_targets),
        "created_at": datetime.now(UTC),
    }


def upgrade() -> None:
    base_models = op.create_table(
        "base_models",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("family", sa.String(length=32), nullable=False),
        sa.Column(
            "modality",
            sa.Enum(
                "text",
                "image",
                name="modality",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("uri", sa.String(length=1000), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("n_layers", sa.Integer(), nullable=False),
        sa.Column("hidden_size", sa.Integer(), nullable=False),
        sa.Column("default_targets", JSON, nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("hidden_size >= 1", name=op.f("ck_base_models_hidden_size_positive")),
        sa.CheckConstraint("n_layers >= 1", name=op.f("ck_base_models_n_layers_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_base_models")),
        sa.UniqueConstraint("name", name=op.f("uq_base_models_name")),
    )
    row = _default_row()
    if op.get_bind().dialect.name == "sqlite":  # the column type stores naive UTC there
        row["created_at"] = row["created_at"].replace(tzinfo=None)  # type: ignore[attr-defined]
    op.bulk_insert(base_models, [row])

    op.add_column("models", sa.Column("base_model_id", sa.Uuid(), nullable=True))
    models = sa.table("models", sa.column("base_model_id", sa.Uuid()))
    op.execute(models.update().values(base_model_id=row["id"]))
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.alter_column("base_model_id", existing_type=sa.Uuid(), nullable=False)
        batch_op.create_index(batch_op.f("ix_models_base_model_id"), ["base_model_id"])
        batch_op.create_foreign_key(
            batch_op.f("fk_models_base_model_id_base_models"),
            "base_models",
            ["base_model_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_models_base_model_id_base_models"), type_="foreignkey"
        )
        batch_op.drop_index(batch_op.f("ix_models_base_model_id"))
        batch_op.drop_column("base_model_id")
    op.drop_table("base_models")
