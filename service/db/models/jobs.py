"""Training, retraining, approximate-pass and exactness-audit jobs with their progress."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from service.db.models.base import Base, CreatedAt, Json, UuidPk, str_enum, utcnow


class JobKind(StrEnum):
    train = "train"
    retrain = "retrain"
    approximate = "approximate"
    exactness_audit = "exactness_audit"  # retrain shards into a scratch store and compare
    measure_quality = "measure_quality"  # score what a model serves on its evaluation split


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class Job(UuidPk, CreatedAt, Base):
    __tablename__ = "jobs"

    model_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("models.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[JobKind] = mapped_column(str_enum(JobKind))
    status: Mapped[JobStatus] = mapped_column(str_enum(JobStatus), default=JobStatus.queued)
    # (model, shard, sequence, from_stage, slice versions) for retrains: one live job per key.
    dedup_key: Mapped[str | None] = mapped_column(sa.String(255), unique=True)
    # A model-wide training job is the parent of its per-sequence jobs and sums their progress.
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    # Per-sequence jobs: which sequence, from which stage (coalescing looks these up).
    sequence_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("sequences.id", ondelete="CASCADE"), index=True
    )
    from_stage: Mapped[int | None]
    params: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    stages_total: Mapped[int] = mapped_column(default=0)
    stages_done: Mapped[int] = mapped_column(default=0)
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(sa.Text)
    started_at: Mapped[datetime | None]
    # Last sign of life: queued (sent), started, a stage done. A live job silent for longer than
    # the lease (UNLEARN_JOB_LEASE_S) lost its message or its worker and is sent again.
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[datetime | None]
    # A parked retrain (no message sent): another order of its shard serves at full depth, so
    # it waits until then (or until the shard needs it) and absorbs the deletions meanwhile.
    deferred_until: Mapped[datetime | None] = mapped_column(index=True)
    deferred_reason: Mapped[str | None] = mapped_column(sa.String(500))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def run_seconds(self) -> float:
        """How long it ran, from its start to its end (0 until it has both)."""
        if self.started_at is None or self.finished_at is None:
            return 0.0
        return max((self.finished_at - self.started_at).total_seconds(), 0.0)
