"""Request and response bodies of the exactness audits, and their link on certificates."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

#: `passed`: every compared layer matched; `failed`: one or more did not; `inconclusive`: no
#: layer could be compared (none active and exact in the chosen shards).
AuditResult = Literal["passed", "failed", "inconclusive"]
ShardIndex = Annotated[int, Field(ge=0, le=2**31 - 1)]


class ExactnessAuditCreate(BaseModel):
    """Which shards to audit (all of them when the body or `shards` is left out)."""

    model_config = ConfigDict(extra="forbid")

    shards: list[ShardIndex] | None = Field(
        None, min_length=1, max_length=10_000, description="Shard indexes, 0-based."
    )


class LayerCheck(BaseModel):
    """One active layer of an audited shard, compared or skipped."""

    layer_id: int
    shard: int
    sequence: int
    position: int = Field(description="The stage, 1-based.")
    artifact: str | None = Field(description="The layer's recorded artifact reference.")
    recomputed: str | None = Field(
        None, description="The reference of the same stage retrained from scratch today."
    )
    stored_digest: str | None = Field(
        None,
        description="The reference (SHA-256) of the bytes the store holds under `artifact` "
        "now; None when they are missing.",
    )
    match: bool | None = Field(
        None, description="`recomputed` = `artifact` = `stored_digest`; None when skipped."
    )
    problem: str | None = Field(None, description="What differs, when `match` is false.")
    skipped: str | None = Field(
        None,
        description="Why it was not compared: `approximate` (an approximate pass's output, "
        "expected to differ until its exact retrain) or `changed during the audit`.",
    )


class ExactnessAuditPublic(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    id: uuid.UUID = Field(description="The audit's job id (also `GET /jobs/{id}`).")
    model_id: uuid.UUID
    base_model: str | None = Field(
        None, description="The base model the audit retrained on (once it ran)."
    )
    base_model_sha256: str | None = Field(
        None,
        description="The digest of that base model's weight files, checked when the worker "
        "loaded it: the comparison holds for these frozen weights.",
    )
    status: str = Field(description="The job's: queued, running, succeeded or failed.")
    result: AuditResult | None = Field(description="Once the job succeeded.")
    shards: list[int]
    layers_checked: int | None
    layers_skipped: int | None
    mismatched: list[int] = Field(description="Ids of the layers that did not match.")
    note: str | None = Field(description="The job's summary, or why it could not run.")
    layers: list[LayerCheck]
    audit_seq: int | None = Field(description="The `exactness.audited` entry in the audit log.")
    job_url: str
    audit_url: str
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ExactnessAuditLink(BaseModel):
    """An exactness audit on a deletion's certificate: after the deletion completed, the layers
    serving its shards were retrained from scratch and compared."""

    job_id: uuid.UUID
    at: datetime
    result: AuditResult = Field(description="The whole audit's result.")
    layers_checked: int = Field(description="Layers of the deletion's shards it compared.")
    mismatched: list[int] = Field(description="Those of them that did not match.")
    audit_seq: int
    audit_hash: str
    base_model_sha256: str | None = Field(
        None, description="The digest of the base model's weights the audit retrained on."
    )
