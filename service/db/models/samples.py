"""Samples (lineage: which shard and slice) and their payloads, kept apart for hard deletion.

A sample of the evaluation split (``split = eval``) is never placed (no shard, no slice) and
never trained on: the service measures what a model serves on these rows. It is deleted like
any other sample, which takes it out of the evaluation too."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from service.db.models.base import Base, BigIntId, CreatedAt, Json, str_enum, utcnow


class Split(StrEnum):
    train = "train"  # placed on a shard's slice and trained on
    eval = "eval"  # never placed nor trained on: what served quality is measured on


class Sample(CreatedAt, Base):
    __tablename__ = "samples"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    model_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("models.id", ondelete="CASCADE"))
    split: Mapped[Split] = mapped_column(str_enum(Split), default=Split.train)
    # Where a training sample was placed; an evaluation sample has neither.
    shard_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("shards.id", ondelete="CASCADE")
    )
    slice_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("slices.id", ondelete="CASCADE")
    )
    external_id: Mapped[str] = mapped_column(sa.String(255))
    subject_id: Mapped[str | None] = mapped_column(sa.String(255))
    deleted: Mapped[bool] = mapped_column(default=False)
    deleted_at: Mapped[datetime | None]

    __table_args__ = (
        sa.UniqueConstraint("model_id", "external_id"),
        sa.Index("ix_samples_model_id_subject_id", "model_id", "subject_id"),
        sa.Index("ix_samples_slice_id_deleted", "slice_id", "deleted"),
        sa.Index("ix_samples_model_id_split_deleted", "model_id", "split", "deleted"),
        sa.CheckConstraint(
            "(split = 'eval') = (shard_id IS NULL) AND (split = 'eval') = (slice_id IS NULL)",
            name="placed_unless_eval",
        ),
    )


class SamplePayload(Base):
    """What a sample contains: the only table with personal data, deleted row by row."""

    __tablename__ = "sample_payloads"

    sample_id: Mapped[int] = mapped_column(
        BigIntId, sa.ForeignKey("samples.id", ondelete="CASCADE"), primary_key=True
    )
    text: Mapped[str | None] = mapped_column(sa.Text)
    # An image model's input: the encoded image (PNG or JPEG) as the API received it.
    image: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    media_type: Mapped[str | None] = mapped_column(sa.String(32))
    features: Mapped[list[float] | None] = mapped_column(Json)
    # A causal LM's sample: its chat messages as ``[[role, content], ...]`` (an instruction
    # pair is a user and an assistant turn). It is the input and the target at once.
    messages: Mapped[list[list[str]] | None] = mapped_column(Json)
    label_index: Mapped[int | None]
    target: Mapped[float | None] = mapped_column(sa.Float)

    __table_args__ = (
        sa.CheckConstraint(
            "text IS NOT NULL OR features IS NOT NULL OR image IS NOT NULL OR messages IS NOT NULL",
            name="has_input",
        ),
        sa.CheckConstraint("(image IS NULL) = (media_type IS NULL)", name="image_has_media_type"),
        sa.CheckConstraint(
            "label_index IS NOT NULL OR target IS NOT NULL OR messages IS NOT NULL",
            name="has_label",
        ),
    )


class KeptSamples(Base):
    """The payloads of a deletion's samples that its approximate pass (and, when the model opts
    in to grading, the grading of that pass) still needs, sealed: the plaintext rows are deleted
    in the deletion's own transaction, and this row (AES-GCM, ``service.db.sealing``) goes once
    read (or graded), or at ``payloads_purge_by`` at the latest."""

    __tablename__ = "kept_samples"

    request_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("deletion_requests.id", ondelete="CASCADE"), primary_key=True
    )
    model_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("models.id", ondelete="CASCADE"), index=True
    )
    n_samples: Mapped[int]
    # The key the rows are sealed with, itself sealed under UNLEARN_SEALING_KEY when one is set.
    data_key: Mapped[bytes] = mapped_column(sa.LargeBinary)
    key_wrapped: Mapped[bool]
    sealed: Mapped[bytes] = mapped_column(sa.LargeBinary)
    # Kept past the pass, for the grading of the pass against its exact retrain.
    for_grading: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
