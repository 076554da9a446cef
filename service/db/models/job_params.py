"""What each kind of job keeps in ``Job.params`` (JSON): one typed shape per kind, shared by the
code that writes it (planning, a runner's start, an audit's result) and the code that reads it
(the runners, artifact collection's pins, the audit's API view and webhook).

Write with ``job.params = XParams(...).dump()``; read with ``XParams.of(job)``. Jobs written
before a field existed read it as its default.
"""

from __future__ import annotations

import uuid
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

from service.db.models.jobs import Job


class JobParams(BaseModel):
    model_config = ConfigDict(frozen=True)

    @classmethod
    def of(cls, job: Job) -> Self:
        return cls.load(job.params)

    @classmethod
    def load(cls, params: dict[str, Any]) -> Self:
        """From a ``params`` column read without its job (a query of several columns)."""
        return cls.model_validate(params or {})

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class SequenceParams(JobParams):
    """A (re)training job of one sequence, once it started: the layers of the valid prefix it
    resumes from (artifact collection keeps them while the job runs)."""

    prefix: list[int] = Field(default_factory=list)


class PlannedSequence(BaseModel):
    """One chain an approximate job edits: stages ``from_stage..L`` of ``chain`` (stages 1..L)."""

    model_config = ConfigDict(frozen=True)

    sequence_id: uuid.UUID
    from_stage: int
    chain: list[int]


class ApproximateParams(JobParams):
    """An approximate pass for one deletion: the method it runs, with every setting, why it was
    chosen, and the chains it edits."""

    deletion_id: uuid.UUID
    method: str
    method_config: dict[str, Any] | None = None  # None: planned before configs were recorded
    method_reason: str = ""
    sequences: list[PlannedSequence] = Field(default_factory=list)


class AuditParams(JobParams):
    """An exactness audit: the shards it compares; once it ran, its result."""

    shards: list[int]
    result: str | None = None
    layers_checked: int | None = None
    layers_skipped: int | None = None
    mismatched: list[int] = Field(default_factory=list)
    audit_seq: int | None = None  # the audit-log entry holding the per-layer results
    base_model: str | None = None
    base_model_sha256: str | None = None


class MeasureParams(JobParams):
    """A measurement of served quality: the serving generation it was queued for (it measures
    the model's generation when it runs, which may be later)."""

    generation: int
