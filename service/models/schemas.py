"""Request and response bodies of the model and sample endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    model_validator,
)

from service.audit.schemas import AuditVerification
from service.base_models.schemas import BaseModelRef
from service.quality.schemas import MeasuredQuality
from unlearning.approx import registry
from unlearning.device import PROFILE_PATTERN
from unlearning.families import Modality
from unlearning.s3t.config import Task

#: `auto` (chosen per request by its shape: prefix_pass.choose_method) and every method of
#: unlearning.approx.registry.
METHOD_CHOICES = ("auto", *registry.names())
if TYPE_CHECKING:
    MethodName = str
else:  # a Literal built from the registry: validated, and an enum in the OpenAPI document
    MethodName = Literal[METHOD_CHOICES]


def _listed(names: list[str]) -> str:
    return ", ".join(f"`{name}`" for name in names) or "none"


APPROXIMATE_METHOD_HELP = (
    "The approximate pass. `auto`: chosen per request by its shape (`suppress_class` for a "
    "whole class, `ssd` otherwise; the choice and why are in the job note and the "
    "certificate). Classification only: "
    + _listed([s.name for s in registry.specs() if s.tasks == {Task.CLASSIFICATION}])
    + "; regression only: "
    + _listed([s.name for s in registry.specs() if s.tasks == {Task.REGRESSION}])
    + "; fitting causal LMs: "
    + _listed([s.name for s in registry.specs() if Task.CAUSAL_LM in s.tasks])
    + " (`auto` chooses `ssd` for one)"
    + "; reading no label: "
    + _listed([s.name for s in registry.specs() if not s.reads_labels])
    + "; text base models only: "
    + _listed([s.name for s in registry.specs() if s.modalities == {Modality.TEXT}])
    + "; image base models only: "
    + _listed([s.name for s in registry.specs() if s.modalities == {Modality.IMAGE}])
    + ". A method that does not fit the model's task or its base model's modality is a 422 "
    "saying why."
)
METHOD_CONFIG_HELP = (
    "Settings of the approximate method's config that differ from its defaults (by name; "
    "see `unlearning/approx/`), validated against the method when the request arrives (a "
    "422 names a setting it does not have or a value it refuses). For a named method only: "
    "`auto` chooses its method per request, so a config for it is a 422."
)


class ModelCreate(BaseModel):
    """A model and its S3T settings (docs/architecture.md, "The S3T engine", says what each
    one does)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    task: Literal["classification", "regression", "causal_lm"] = Field(
        "classification",
        description="`causal_lm`: instruction-tune a decoder base model (a `llama`, `mistral`, "
        "`qwen2` or `gpt2` family in the catalogue) on conversations; it answers "
        "`POST /models/{id}/generate` and `/score`, not `/predict`.",
    )
    labels: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        None,
        max_length=1000,
        description="Class names of a classification model (at least two, distinct); none for "
        "regression and causal_lm.",
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
    base_model: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9._-]{0,99}$",
        description="The registered base model to fine-tune (`GET /base-models` lists them); "
        "default UNLEARN_DEFAULT_BASE_MODEL. Fixed once created.",
    )
    target_modules: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        None,
        min_length=1,
        max_length=16,
        description="The modules LoRA adapts; default the base model's family's "
        "(`default_targets`: `query`, `value` for BERT).",
    )
    epochs_per_stage: int = Field(2, ge=1, le=100)
    learning_rate: float = Field(1e-3, gt=0, le=1)
    batch_size: int = Field(32, ge=2, le=4096)
    max_length: int = Field(64, ge=2, le=4096)
    seed: int = Field(0, ge=0, lt=2**63)
    gradient_penalty: float = Field(
        0.0,
        ge=0,
        le=1,
        description="IAU's gradient-norm penalty during training (0 = off; 0.005 in IAU's code).",
    )
    unlearning_policy: Literal["exact", "approximate_then_exact", "auto"] = Field(
        "exact",
        description="`exact`: deactivate, then retrain exactly. `approximate_then_exact`: also "
        "run an approximate pass on the invalidated layers and serve its result (marked "
        "approximate) until the exact retrain replaces it. `auto`: approximate only when the "
        "training queue's expected wait exceeds UNLEARN_AUTO_APPROXIMATE_WAIT_S.",
    )
    approximate_method: MethodName = Field("auto", description=APPROXIMATE_METHOD_HELP)
    method_config: dict[str, Any] | None = Field(
        None,
        max_length=64,
        description=f"{METHOD_CONFIG_HELP} A deletion's own `method_config` wins over this one, "
        "setting by setting, when it runs the model's method.",
    )
    placement: Literal["subject", "sample"] = Field(
        "subject",
        description="How samples are placed on shards and slices. `subject`: all of a data "
        "subject's samples in one shard and one slice (a new subject on the least-loaded slice, "
        "so no slice exceeds the mean by more than the largest subject; samples without a "
        "subject by their id), so a subject's deletion cuts one slice. `sample`: each "
        "sample by its own id, spread over every shard and slice. Fixed once created.",
    )
    min_live_shards: int = Field(
        1,
        ge=1,
        le=256,
        description="The fewest live shards the model answers from: with fewer (retrains "
        "catching up after deletions), predictions are a 409. At most `n_shards`.",
    )
    grade_approximations: bool = Field(
        False,
        description="Grade each approximate pass on the deleted samples too (accuracy gap on "
        "them, a per-example membership test against the exact retrain), not only on the "
        "evaluation split: a deletion's samples are then kept sealed (AES-GCM, never served) "
        "past its pass until that grading, at most UNLEARN_GRADING_KEEP_S longer; the "
        "certificate says when they were purged. Classification models only.",
    )
    compute_profile: str | None = Field(
        None,
        pattern=PROFILE_PATTERN,
        max_length=64,
        description="The kind of device, torch version and base precision that train it, e.g. "
        "`cpu-torch2.13.0`, `cuda-sm90-torch2.11.0` or `cuda-sm90-torch2.11.0-bf16` (exactness "
        "is bitwise per profile; its jobs run only on workers of this profile). Default: "
        "UNLEARN_COMPUTE_PROFILE, else the API's own.",
    )


class ModelPublic(BaseModel):
    id: uuid.UUID
    name: str
    base_model: BaseModelRef
    task: str
    labels: list[str] | None
    n_shards: int
    n_slices: int
    budget: int
    sequence_orders: list[list[int]]
    config: dict[str, Any]
    status: str
    serving_generation: int
    unlearning_policy: str
    approximate_method: str
    method_config: dict[str, Any] | None
    placement: str
    min_live_shards: int
    grade_approximations: bool = False
    compute_profile: str
    created_at: datetime


MAX_TEXT = 100_000
MAX_MESSAGES = 64


class Message(BaseModel):
    """One chat turn of a causal LM's sample or prompt."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=MAX_TEXT)


class SampleIn(BaseModel):
    """A classifier's or regressor's sample (`label` and one input), or a causal LM's (a
    `prompt` and its `response`, or chat `messages` ending with an assistant turn)."""

    model_config = ConfigDict(extra="forbid")

    external_id: str = Field(min_length=1, max_length=255)
    # Strict numbers: `1` stays a class index (lax parsing made it 1.0) and `true` is refused.
    label: Annotated[str, Field(max_length=200)] | StrictInt | StrictFloat | None = Field(
        None,
        description="A class name or its index, or the target of a regression model (required "
        "there; refused for a causal_lm model).",
    )
    prompt: str | None = Field(
        None, max_length=MAX_TEXT, description="A causal_lm sample's instruction (with `response`)."
    )
    response: str | None = Field(
        None, max_length=MAX_TEXT, description="The response a causal_lm model learns to give."
    )
    messages: list[Message] | None = Field(
        None,
        max_length=MAX_MESSAGES,
        description="A causal_lm sample as chat messages instead of `prompt` and `response`: an "
        "optional system message, then user and assistant turns alternating, ending with an "
        "assistant turn (the loss covers the assistant turns).",
    )
    text: str | None = Field(None, max_length=MAX_TEXT, description="At most 100,000 characters.")
    image: str | None = Field(
        None,
        description="An image model's input instead of `text`: base64 of a PNG or JPEG, at "
        "most UNLEARN_MAX_IMAGE_BYTES encoded and UNLEARN_MAX_IMAGE_PIXELS pixels.",
    )
    features: list[float] | None = Field(None, max_length=10_000)
    subject_id: str | None = Field(None, max_length=255, description="The data subject.")
    split: Literal["train", "eval"] = Field(
        "train",
        description="`eval`: a row of the model's evaluation split, never placed on a shard nor "
        "trained on; what the model serves is measured on these rows after every change. "
        "Capped per model (UNLEARN_EVAL_MAX_SAMPLES) and deletable like any other sample.",
    )


class SamplesCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples: list[SampleIn] = Field(min_length=1, max_length=10_000)


class SampleRowError(BaseModel):
    row: int
    external_id: str | None
    type: str
    title: str
    detail: str


class SliceBalance(BaseModel):
    sizes: list[list[int]] = Field(description="Live samples per slice: `sizes[shard][slice]`.")
    mean: float
    unbalanced: list[str] = Field(
        description="Slices more than twice above or below the mean size (from a mean of 10)."
    )


class SamplesResult(BaseModel):
    stored: int
    errors: list[SampleRowError]
    balance: SliceBalance = Field(description="How the model's live samples fill its slices.")
    eval_samples: int = Field(0, description="Live samples of the model's evaluation split.")


class TrainAccepted(BaseModel):
    job_id: uuid.UUID
    job_url: str
    model_status: str


class PendingJob(BaseModel):
    job_id: uuid.UUID
    kind: str
    status: str
    from_stage: int | None
    waiting: str | None = Field(
        None,
        description="A parked retrain: why it waits (another order serves the shard at full "
        "depth) and when it follows at the latest.",
    )
    waits_until: datetime | None = None


class SequenceStatus(BaseModel):
    index: int
    order: list[int]
    valid_prefix: int = Field(description="Stages 1..valid_prefix are valid and servable.")
    exact_prefix: int = Field(
        description="Stages 1..exact_prefix are exact; the valid stages above them are the "
        "output of an approximate pass, until the exact retrain replaces them or a deletion of "
        "the shard completes (it withdraws every approximate layer of its shards: the order "
        "serves its exact prefix until its retrain)."
    )
    pending: list[PendingJob]


class ServingChoice(BaseModel):
    sequence: int
    stages: int
    approximate_stages: int = Field(description="How many of the served stages are approximate.")


class ShardStatus(BaseModel):
    index: int
    serving: ServingChoice | None = Field(description="None: the shard is out of the ensemble.")
    deleted_samples: int
    sequences: list[SequenceStatus]


class EstimatedQuality(BaseModel):
    """A proxy, not a measurement: how much of the trained model is being served (the
    measurement is `measured_quality`)."""

    answering: bool = Field(
        description="Whether predictions are answered: at least `min_live_shards` shards live."
    )
    min_live_shards: int
    live_shards: float = Field(description="Share of shards in the ensemble.")
    served_depth: float = Field(description="Mean served stages / L over all shards.")
    approximate_depth: float = Field(
        description="Mean served approximate stages / L over all shards (0: all exact)."
    )


class ComputeStatus(BaseModel):
    profile: str = Field(description="The compute profile that trains the model.")
    live_workers: int = Field(description="Live workers consuming that profile's queues.")
    waiting: str | None = Field(
        description="Set while the model has live jobs that no live worker can take, and why."
    )


class ModelStatusPublic(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_id: uuid.UUID
    status: str
    serving_generation: int
    unlearning_policy: str
    compute: ComputeStatus
    placement: str
    pending_retrains: int
    shards: list[ShardStatus]
    estimated_quality: EstimatedQuality
    measured_quality: MeasuredQuality | None = Field(
        None,
        description="The latest measurement on the model's evaluation split (null without one; "
        "`current` false while a newer generation waits for its measurement).",
    )
    warnings: list[str] = Field(
        description="What an operator should know: slices far from the mean size, jobs that no "
        "live worker can take."
    )
    audit: AuditVerification | None = Field(
        None,
        description="The audit chain as last checked: its checkpoint, the last full "
        "verification, and any break found (nothing is re-hashed to answer).",
    )


def _not_blank(text: str) -> str:
    """As for a sample's text: a text of whitespace alone says nothing to predict from."""
    if not text.strip():
        raise ValueError("a text must not be blank")
    return text


class PredictRequest(BaseModel):
    """What to predict: texts for a text model, or images for an image model (exactly one)."""

    model_config = ConfigDict(extra="forbid")

    texts: (
        list[Annotated[str, Field(min_length=1, max_length=10_000), AfterValidator(_not_blank)]]
        | None
    ) = Field(None, min_length=1, max_length=256)
    images: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="For an image model, instead of `texts`: base64 of PNG or JPEG images, "
        "each at most UNLEARN_MAX_IMAGE_BYTES encoded and UNLEARN_MAX_IMAGE_PIXELS pixels.",
    )

    @model_validator(mode="after")
    def _one_input(self) -> PredictRequest:
        if (self.texts is None) == (self.images is None):
            raise ValueError("give exactly one of `texts` and `images`")
        return self


class PredictionOut(BaseModel):
    label: str | None = Field(description="The predicted class (classification).")
    scores: list[float] | None = Field(description="Mean shard logits per class.")
    value: float | None = Field(description="The predicted value (regression).")


class ShardStatusBrief(BaseModel):
    shard: int
    sequence: int
    stages: int
    approximate_stages: int = Field(description="Served stages from an approximate pass.")
    layers: list[int] = Field(
        description="The ids of the layers that answered, stage 1 first: a deletion's "
        "certificate lists the layers it invalidated, so anyone can check that no answer sent "
        "after its 202 used one."
    )


class PredictResponse(BaseModel):
    serving_generation: int = Field(
        description="A generation at which every layer that answered was still valid."
    )
    shards: list[ShardStatusBrief]
    predictions: list[PredictionOut]


class AuditEntryOut(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    chain: str
    entries: list[AuditEntryOut]
    next_after_seq: int | None = Field(
        description="The `after_seq` of the next page, or null on the last page."
    )
    next_cursor: str | None = Field(
        None, description="The `cursor` of the next page (the same place), or null."
    )
    verification: AuditVerification
