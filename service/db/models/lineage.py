"""The lineage: models, shards, slices (versioned), slice sequences and trained layers.

A layer is one (sequence, position) training stage. It records, in ``layer_slice_versions``,
the version of every slice it was trained on; it is valid iff each recorded version equals the
slice's current version. ``state`` mirrors that for fast serving queries and is kept in step by
the lineage repository in the same transaction as every version bump.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from service.db.models.base import (
    Base,
    BigIntId,
    CreatedAt,
    Json,
    Sha256Hex,
    UuidPk,
    str_enum,
    utcnow,
)
from service.db.models.base_models import BaseModel
from service.lineage.rules import LayerState as LayerState  # the rules own the states
from unlearning.sharding import PlacementPolicy


class Task(StrEnum):
    classification = "classification"
    regression = "regression"
    causal_lm = "causal_lm"  # instruction-tuned decoder: samples are conversations, no labels


class UnlearningPolicy(StrEnum):
    exact = "exact"  # deactivate, retrain exactly
    approximate_then_exact = "approximate_then_exact"  # and serve an approximate pass meanwhile
    auto = "auto"  # approximate only when the retrain queue's expected wait is long


#: The approximate method chosen per request by its shape (unlearning.approx.prefix_pass).
AUTO_METHOD = "auto"


class ModelStatus(StrEnum):
    created = "created"
    training = "training"
    ready = "ready"
    failed = "failed"


class Model(UuidPk, CreatedAt, Base):
    __tablename__ = "models"

    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    # The frozen weights the model's adapters sit on; a base model in use cannot be removed.
    base_model_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("base_models.id"), index=True)
    # Loaded with the model in one statement (every job, prediction and deletion reads it).
    base_model: Mapped[BaseModel] = relationship(lazy="joined", innerjoin=True)
    task: Mapped[Task] = mapped_column(str_enum(Task))
    labels: Mapped[list[str] | None] = mapped_column(Json)
    n_shards: Mapped[int]
    n_slices: Mapped[int]
    budget: Mapped[int]
    config: Mapped[dict[str, Any]] = mapped_column(Json)
    status: Mapped[ModelStatus] = mapped_column(str_enum(ModelStatus), default=ModelStatus.created)
    serving_generation: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    unlearning_policy: Mapped[UnlearningPolicy] = mapped_column(
        str_enum(UnlearningPolicy), default=UnlearningPolicy.exact
    )
    # A method of unlearning.approx.registry, or `auto`: plain text validated here (a new
    # method needs no migration), with the model's override of that method's config.
    approximate_method: Mapped[str] = mapped_column(sa.String(32), default=AUTO_METHOD)
    method_config: Mapped[dict[str, Any] | None] = mapped_column(Json)
    # The kind of device and torch version that train it (``cpu-torch2.13.0``,
    # ``cuda-sm90-torch2.11.0``): exactness is bitwise per profile, so its jobs go only to
    # workers of this profile.
    compute_profile: Mapped[str] = mapped_column(sa.String(64))
    # How samples are placed on shards and slices (unlearning.sharding); fixed at creation.
    placement: Mapped[PlacementPolicy] = mapped_column(
        str_enum(PlacementPolicy), default=PlacementPolicy.subject
    )
    # The fewest live shards the model answers from; fewer is a 409 while retrains catch up.
    min_live_shards: Mapped[int] = mapped_column(default=1)
    # Opt-in: a deletion's samples are kept (encrypted, never served) until the grading of its
    # approximate pass has compared the pass with its exact retrain on them.
    grade_approximations: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @validates("approximate_method")
    def _registered_method(self, _key: str, value: str) -> str:
        from unlearning.approx.registry import REGISTRY  # the methods' modules load torch

        if value != AUTO_METHOD and value not in REGISTRY:
            raise ValueError(f"`approximate_method` {value!r} is not a registered method")
        return value

    __table_args__ = (
        sa.CheckConstraint("n_shards >= 1", name="n_shards_positive"),
        sa.CheckConstraint("n_slices >= 1", name="n_slices_positive"),
        sa.CheckConstraint("budget >= 1", name="budget_positive"),
        sa.CheckConstraint(
            "min_live_shards >= 1 AND min_live_shards <= n_shards", name="min_live_shards_range"
        ),
    )


class Shard(UuidPk, Base):
    __tablename__ = "shards"

    model_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("models.id", ondelete="CASCADE"))
    index: Mapped[int]

    __table_args__ = (sa.UniqueConstraint("model_id", "index"),)


class Slice(UuidPk, Base):
    __tablename__ = "slices"

    shard_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("shards.id", ondelete="CASCADE"))
    index: Mapped[int]
    version: Mapped[int] = mapped_column(default=0)

    __table_args__ = (sa.UniqueConstraint("shard_id", "index"),)


class SliceSequence(UuidPk, Base):
    """One order of a shard's slices (a permutation of 0..L-1); stage i trains on its first i."""

    __tablename__ = "sequences"

    shard_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("shards.id", ondelete="CASCADE"))
    index: Mapped[int]
    slice_order: Mapped[list[int]] = mapped_column(Json)

    __table_args__ = (sa.UniqueConstraint("shard_id", "index"),)


class Layer(CreatedAt, Base):
    __tablename__ = "layers"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    sequence_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("sequences.id", ondelete="CASCADE")
    )
    position: Mapped[int]  # 1-based stage: block `position` from the top
    parent_layer_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("layers.id", ondelete="SET NULL")
    )
    state: Mapped[LayerState] = mapped_column(str_enum(LayerState), default=LayerState.training)
    artifact_ref: Mapped[str | None] = mapped_column(sa.String(500), index=True)
    artifact_digest: Mapped[str | None] = mapped_column(Sha256Hex)
    trained_sample_count: Mapped[int] = mapped_column(default=0)
    # An approximate pass's output: the layer it edited saw deleted samples (`layer_deletions`
    # names the requests); an exact retrain supersedes it.
    approximate: Mapped[bool] = mapped_column(default=False)
    job_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="SET NULL"))
    activated_at: Mapped[datetime | None]
    invalidated_at: Mapped[datetime | None]

    __table_args__ = (
        sa.CheckConstraint("position >= 1", name="position_positive"),
        sa.Index("ix_layers_sequence_id_position_state", "sequence_id", "position", "state"),
        # At most one active layer per stage of a sequence.
        sa.Index(
            "uq_layers_active_sequence_position",
            "sequence_id",
            "position",
            unique=True,
            sqlite_where=sa.text("state = 'active'"),
            postgresql_where=sa.text("state = 'active'"),
        ),
    )


class LayerSliceVersion(Base):
    """The version of one slice that a layer was trained on."""

    __tablename__ = "layer_slice_versions"

    layer_id: Mapped[int] = mapped_column(
        BigIntId, sa.ForeignKey("layers.id", ondelete="CASCADE"), primary_key=True
    )
    slice_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("slices.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    version: Mapped[int]


class LayerStatistics(CreatedAt, Base):
    """The pass statistics (SSD's importance, IAU's gradient, the head's features and targets) of
    the chain that ends at a sequence's last-stage layer, over the data it was trained on: an
    artifact, computed after training. Valid for a deletion while only that deletion's samples
    left the chain's slices (checked by the pass); collected once no pass can read them
    (``StatisticsRepository.stale``, ``service.artifacts.collection``)."""

    __tablename__ = "layer_statistics"

    layer_id: Mapped[int] = mapped_column(
        BigIntId, sa.ForeignKey("layers.id", ondelete="CASCADE"), primary_key=True
    )
    artifact_ref: Mapped[str] = mapped_column(sa.String(500))
    sample_count: Mapped[int]


class LayerDeletion(Base):
    """An approximate layer and a deletion request its pass unlearned."""

    __tablename__ = "layer_deletions"

    layer_id: Mapped[int] = mapped_column(
        BigIntId, sa.ForeignKey("layers.id", ondelete="CASCADE"), primary_key=True
    )
    request_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("deletion_requests.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class LayerInvalidation(Base):
    """A layer and the deletion request that invalidated it (one per layer: only an active
    layer is invalidated)."""

    __tablename__ = "layer_invalidations"

    layer_id: Mapped[int] = mapped_column(
        BigIntId, sa.ForeignKey("layers.id", ondelete="CASCADE"), primary_key=True
    )
    request_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("deletion_requests.id", ondelete="CASCADE"), index=True
    )
