"""Request and response bodies of the model and sample endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelCreate(BaseModel):
    """A model and its S3T settings (see the README's S3T section for what each one does)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    task: Literal["classification", "regression"] = "classification"
    labels: list[str] | None = Field(
        None, description="Class names of a classification model (at least two, distinct)."
    )
    n_shards: int = Field(4, ge=1, le=256)
    n_slices: int = Field(4, ge=1, le=64)
    budget: int = Field(4, ge=1, le=64, description="Slice orders trained per shard.")
    sequence_strategy: Literal["cyclic", "bipartite"] = "cyclic"
    deletion_prior: list[float] | None = Field(
        None, description="Per-slice deletion probabilities (bipartite strategy only)."
    )
    lora_rank: int = Field(8, ge=1, le=256)
    lora_alpha: float = Field(16.0, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["query", "value"], min_length=1)
    epochs_per_stage: int = Field(2, ge=1, le=100)
    learning_rate: float = Field(1e-3, gt=0, le=1)
    batch_size: int = Field(32, ge=2, le=4096)
    max_length: int = Field(64, ge=2, le=4096)
    seed: int = Field(0, ge=0, lt=2**63)


class ModelPublic(BaseModel):
    id: uuid.UUID
    name: str
    task: str
    labels: list[str] | None
    n_shards: int
    n_slices: int
    budget: int
    sequence_orders: list[list[int]]
    config: dict[str, Any]
    status: str
    serving_generation: int
    created_at: datetime


class SampleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: str = Field(min_length=1, max_length=255)
    label: str | float = Field(description="A class name, or the target of a regression model.")
    text: str | None = None
    features: list[float] | None = None
    subject_id: str | None = Field(None, max_length=255, description="The data subject.")


class SamplesCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples: list[SampleIn] = Field(min_length=1, max_length=10_000)


class SampleRowError(BaseModel):
    row: int
    external_id: str | None
    type: str
    title: str
    detail: str


class SamplesResult(BaseModel):
    stored: int
    errors: list[SampleRowError]
