"""Measured quality: what a model served scored on its evaluation split, and how close each
approximate pass came to the exact retrain that superseded it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from service.db.models.base import Base, BigIntId, Json, utcnow


class QualityMeasurement(Base):
    """One measurement of what one serving generation of a model answers on its evaluation
    split: the task's metric (accuracy in percent, a regressor's mean absolute error, a causal
    LM's mean token loss) and the mean loss, next to the proxy (served shares) at that time."""

    __tablename__ = "quality_measurements"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    model_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("models.id", ondelete="CASCADE"))
    job_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="SET NULL"))
    serving_generation: Mapped[int] = mapped_column(sa.BigInteger)
    measured_at: Mapped[datetime] = mapped_column(default=utcnow)
    metric: Mapped[str] = mapped_column(sa.String(32))
    value: Mapped[float | None] = mapped_column(sa.Float)  # None: the model answered nothing
    loss: Mapped[float | None] = mapped_column(sa.Float)
    n_eval: Mapped[int]
    # The proxy at that generation: the shares of shards and of stages served.
    live_shards: Mapped[float] = mapped_column(sa.Float)
    served_depth: Mapped[float] = mapped_column(sa.Float)
    seconds: Mapped[float] = mapped_column(sa.Float, default=0.0)  # what measuring cost
    # The served model's outputs on each evaluation row (``service.quality.measure.Outputs``),
    # which grading compares; no input and no label, only sample ids and numbers.
    outputs: Mapped[bytes | None] = mapped_column(sa.LargeBinary)

    __table_args__ = (sa.Index("ix_quality_measurements_model_id_id", "model_id", "id"),)


class PassGrade(Base):
    """An approximate pass compared with the exact retrain that superseded it."""

    __tablename__ = "pass_grades"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    model_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("models.id", ondelete="CASCADE"))
    # The measurement job that graded, and the approximate job it grades (one grade per pass).
    job_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="SET NULL"))
    pass_job_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("jobs.id", ondelete="CASCADE"), unique=True
    )
    method: Mapped[str] = mapped_column(sa.String(32))
    graded_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Points between the pass's accuracy and the exact model's; the pass's seconds over its
    # exact retrains'.
    gap: Mapped[float] = mapped_column(sa.Float)
    cost_share: Mapped[float] = mapped_column(sa.Float)
    # Whether the deleted samples were compared too (the model opted in), or only the
    # evaluation split.
    with_deleted: Mapped[bool] = mapped_column(default=False)
    grade: Mapped[dict[str, Any]] = mapped_column(Json)  # unlearning.evaluation.PassGrade

    __table_args__ = (sa.Index("ix_pass_grades_model_id_method", "model_id", "method"),)
