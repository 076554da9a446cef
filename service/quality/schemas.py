"""What the API shows of measured quality and of approximate passes' grades."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class MeasuredQuality(BaseModel):
    """A measurement, not a proxy: what one serving generation answered on the model's
    evaluation split."""

    metric: str = Field(
        description="`accuracy` (percent, classifiers), `mae` (regressors) or `token_loss` "
        "(nats per token of the last assistant turn, causal LMs)."
    )
    value: float | None = Field(description="The metric; null when no shard answered.")
    loss: float | None = Field(
        description="Mean cross-entropy (classifiers), squared error (regressors), or the "
        "token loss (causal LMs)."
    )
    n_eval: int = Field(description="Evaluation rows it was measured on.")
    serving_generation: int = Field(description="The serving generation measured.")
    current: bool = Field(description="Whether the model still serves that generation.")
    measured_at: datetime
    live_shards: float = Field(description="The proxy at that generation: shards served.")
    served_depth: float = Field(description="The proxy at that generation: stages served.")
    seconds: float = Field(description="What measuring took.")


class MethodGrades(BaseModel):
    """One method's graded passes on this model: what `auto` chooses from."""

    method: str
    grades: int
    mean_gap: float = Field(description="Mean points of accuracy from the exact retrain.")
    mean_cost_share: float = Field(description="Mean pass time over its exact retrains' time.")
    summary: str


class PassGradePublic(BaseModel):
    pass_job_id: uuid.UUID
    method: str
    graded_at: datetime
    gap: float = Field(description="Points of accuracy between the pass and its exact retrain.")
    cost_share: float
    with_deleted: bool = Field(
        description="Whether the deleted samples were compared too; false: the evaluation "
        "split alone."
    )
    grade: dict[str, Any] = Field(
        description="accuracy, exact_accuracy, agreement (percent of rows where both predict "
        "alike), kl (nats), n_eval; with the deleted samples also ua_gap, membership_auc, "
        "flagged."
    )


class QualityReport(BaseModel):
    model_config = {"protected_namespaces": ()}

    model_id: uuid.UUID
    eval_samples: int = Field(description="Live samples of the evaluation split.")
    latest: MeasuredQuality | None
    measurements: list[MeasuredQuality] = Field(description="Newest first.")
    methods: list[MethodGrades]
    grades: list[PassGradePublic] = Field(description="Newest first.")
    note: str
