"""The base-model catalogue: the pretrained folders models fine-tune, registered by operators.

A base model is deployment-wide (every tenant may name it) and read-only: its ``sha256`` is the
digest of its weight files (``unlearning.base_models.weights_digest``), recorded at registration
and checked at every load, so a model's lineage (``Model.base_model_id``) pins the exact frozen
weights its adapters were trained on.
"""

from __future__ import annotations

from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from service.db.models.base import Base, CreatedAt, Json, Sha256Hex, UuidPk, str_enum

#: A base model's name: a slug, so it reads well in URLs and command lines.
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,99}$"
NAME_MAX = 100


class Modality(StrEnum):
    text = "text"
    image = "image"


class BaseModel(UuidPk, CreatedAt, Base):
    __tablename__ = "base_models"

    name: Mapped[str] = mapped_column(sa.String(NAME_MAX), unique=True)
    family: Mapped[str] = mapped_column(sa.String(32))
    modality: Mapped[Modality] = mapped_column(str_enum(Modality))
    # A local folder, or `s3://bucket/prefix` (downloaded once per machine, by digest).
    uri: Mapped[str] = mapped_column(sa.String(1000))
    sha256: Mapped[str] = mapped_column(Sha256Hex)
    n_layers: Mapped[int]
    hidden_size: Mapped[int]
    default_targets: Mapped[list[str]] = mapped_column(Json)

    __table_args__ = (
        sa.CheckConstraint("n_layers >= 1", name="n_layers_positive"),
        sa.CheckConstraint("hidden_size >= 1", name="hidden_size_positive"),
    )
