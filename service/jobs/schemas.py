"""Response bodies of the job endpoint."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class JobPublic(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    id: uuid.UUID
    model_id: uuid.UUID
    kind: str = Field(description="train, retrain, approximate, exactness_audit or measure_quality")
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    sequence_id: uuid.UUID | None
    from_stage: int | None
    stages_done: int
    stages_total: int
    progress: float = Field(description="stages_done / stages_total, 0..1")
    eta_s: float | None = Field(description="Seconds left at the pace so far, while running.")
    attempts: int
    error: str | None = Field(
        description="Why it failed; or a note (what was discarded or skipped; an approximate "
        "pass's method and why it was chosen)."
    )
    children: int = Field(description="Per-sequence jobs of a model-wide training job.")
    compute_profile: str = Field(description="The model's: only its workers run the job.")
    parked: str | None = Field(
        description="A retrain that waits without being sent, and why (S3T-aware scheduling)."
    )
    parked_until: datetime | None
    waiting_for_worker: str | None = Field(
        description="Why a live job cannot start: no live worker of its compute profile."
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
