"""The shapes of the service's JSON, as ``TypedDict``s (requests) and response types.

Responses are returned as the decoded JSON, typed here: a field the service adds later is still
in the dict, and nothing is lost or renamed. Times are ISO 8601 strings and ids strings, as on
the wire. These types are written by hand from the service's OpenAPI schemas (the client imports
nothing of the service, so that it installs on its own); ``tests/unit/test_client_schemas.py``
compares each with its component of the service's OpenAPI document, field by field and type by
type, and fails on any difference: change a schema there, change its type here.

:class:`WebhookEvent`, what :func:`unlearn_client.verify_webhook` returns, is a parsed object
(``datetime``, ``uuid.UUID``) because the receiver builds it from bytes it checked itself.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NotRequired, TypedDict, get_args

# --- requests -------------------------------------------------------------------------------


class Message(TypedDict):
    """One chat turn of a causal LM's sample or prompt."""

    role: Literal["system", "user", "assistant"]
    content: str


class SampleIn(TypedDict):
    """A training sample: ``text`` (or ``features``; for an image model ``image``, the bytes of
    a PNG or JPEG, which the client sends base64-encoded, or that base64 text), its ``label``
    (a class name or index, or a regression target) and optionally its data subject. A causal
    LM's sample has no label and no input: a ``prompt`` and its ``response``, or ``messages``
    ending with an assistant turn."""

    external_id: str
    label: NotRequired[str | int | float]
    text: NotRequired[str]
    image: NotRequired[bytes | str]
    features: NotRequired[list[float]]
    subject_id: NotRequired[str]
    prompt: NotRequired[str]
    response: NotRequired[str]
    messages: NotRequired[list[Message]]
    split: NotRequired[Literal["train", "eval"]]


# --- models and samples ---------------------------------------------------------------------

ModelState = Literal["created", "training", "ready", "failed"]


class BaseModelRef(TypedDict):
    """The base model a model fine-tunes; ``sha256`` is the digest of its weight files."""

    name: str
    family: str
    modality: str
    sha256: str


class BaseModel(TypedDict):
    """A registered base model (``GET /base-models``)."""

    name: str
    family: str
    modality: str
    sha256: str
    n_layers: int
    hidden_size: int
    default_targets: list[str]
    default: bool
    created_at: str


class Model(TypedDict):
    id: str
    name: str
    base_model: BaseModelRef
    task: str
    labels: list[str] | None
    n_shards: int
    n_slices: int
    budget: int
    sequence_orders: list[list[int]]
    config: dict[str, Any]
    status: ModelState
    serving_generation: int
    unlearning_policy: str
    approximate_method: str
    method_config: dict[str, Any] | None
    placement: str
    min_live_shards: int
    grade_approximations: NotRequired[bool]
    compute_profile: str
    created_at: str


class SampleRowError(TypedDict):
    """A refused row; ``row`` is its index in the list given to the call (across batches)."""

    row: int
    external_id: str | None
    type: str
    title: str
    detail: str


class SliceBalance(TypedDict):
    sizes: list[list[int]]
    mean: float
    unbalanced: list[str]


class SamplesResult(TypedDict):
    """How many rows were stored, each refused row, and the model's slice balance afterwards."""

    stored: int
    errors: list[SampleRowError]
    balance: SliceBalance
    eval_samples: NotRequired[int]


class TrainAccepted(TypedDict):
    job_id: str
    job_url: str
    model_status: str


class PendingJob(TypedDict):
    job_id: str
    kind: str
    status: str
    from_stage: int | None
    waiting: str | None
    waits_until: str | None


class SequenceStatus(TypedDict):
    index: int
    order: list[int]
    valid_prefix: int
    exact_prefix: int
    pending: list[PendingJob]


class ServingChoice(TypedDict):
    sequence: int
    stages: int
    approximate_stages: int


class ShardStatus(TypedDict):
    index: int
    serving: ServingChoice | None
    deleted_samples: int
    sequences: list[SequenceStatus]


class EstimatedQuality(TypedDict):
    answering: bool
    min_live_shards: int
    live_shards: float
    served_depth: float
    approximate_depth: float


class MeasuredQuality(TypedDict):
    """What one serving generation answered on the model's evaluation split."""

    metric: str
    value: float | None
    loss: float | None
    n_eval: int
    serving_generation: int
    current: bool
    measured_at: str
    live_shards: float
    served_depth: float
    seconds: float


class MethodGrades(TypedDict):
    method: str
    grades: int
    mean_gap: float
    mean_cost_share: float
    summary: str


class PassGrade(TypedDict):
    pass_job_id: str
    method: str
    graded_at: str
    gap: float
    cost_share: float
    with_deleted: bool
    grade: dict[str, Any]


class QualityReport(TypedDict):
    """Measured quality over time, and each approximate method's grades on this model."""

    model_id: str
    eval_samples: int
    latest: MeasuredQuality | None
    measurements: list[MeasuredQuality]
    methods: list[MethodGrades]
    grades: list[PassGrade]
    note: str


class ComputeStatus(TypedDict):
    profile: str
    live_workers: int
    waiting: str | None


class ModelStatus(TypedDict):
    model_id: str
    status: ModelState
    serving_generation: int
    unlearning_policy: str
    compute: ComputeStatus
    placement: str
    pending_retrains: int
    shards: list[ShardStatus]
    estimated_quality: EstimatedQuality
    measured_quality: NotRequired[MeasuredQuality | None]
    warnings: list[str]
    audit: NotRequired[AuditVerification | None]


class Prediction(TypedDict):
    label: str | None
    scores: list[float] | None
    value: float | None


class ShardAnswer(TypedDict):
    shard: int
    sequence: int
    stages: int
    approximate_stages: int
    layers: list[int]


class PredictResponse(TypedDict):
    serving_generation: int
    shards: list[ShardAnswer]
    predictions: list[Prediction]


class GeneratedPiece(TypedDict):
    """A ``token`` event of a streamed generation; ``shards`` (the layers that computed these
    tokens) on the first event and whenever they change, else None."""

    text: str
    token_ids: list[int]
    serving_generation: int
    shards: list[ShardAnswer] | None


class GenerateResponse(TypedDict):
    """A whole generation (the JSON answer, and a stream's ``done`` event); ``layers``: every
    layer id that computed any of its tokens."""

    text: str
    token_ids: list[int]
    finish_reason: Literal["eos", "stop", "length"]
    prompt_tokens: int
    serving_generation: int
    shards: list[ShardAnswer]
    layers: list[int]
    rebased: int


@dataclass(frozen=True)
class GenerationEvent:
    """One server-sent event of :meth:`UnlearnClient.generate_stream`: ``token`` (``piece``),
    then ``done`` (``done``, the whole generation). An error once the stream has started
    raises the :class:`ApiError` of its problem instead."""

    event: Literal["token", "done"]
    piece: GeneratedPiece | None = None
    done: GenerateResponse | None = None


class ScoredCompletion(TypedDict):
    token_ids: list[int]
    logprobs: list[float]
    total: float


class ScoreResponse(TypedDict):
    prompt_tokens: int
    serving_generation: int
    shards: list[ShardAnswer]
    layers: list[int]
    scores: list[ScoredCompletion]


class Job(TypedDict):
    id: str
    model_id: str
    kind: str
    status: str
    sequence_id: str | None
    from_stage: int | None
    stages_done: int
    stages_total: int
    progress: float
    eta_s: float | None
    attempts: int
    error: str | None
    children: int
    compute_profile: str
    parked: str | None
    parked_until: str | None
    waiting_for_worker: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None


# --- deletions and certificates -------------------------------------------------------------

DeletionState = Literal[
    "received", "deactivated", "approximated", "retraining", "completed", "failed"
]


class DeletionCounts(TypedDict):
    requested: int
    deleted: int
    already_deleted: int
    unknown: int


class Deletion(TypedDict):
    id: str
    model_id: str
    status: DeletionState
    partial: bool
    unknown_ids: list[str]
    subject: Literal["deleted", "already_deleted", "unknown"] | None
    counts: DeletionCounts
    failure_reason: str | None
    serving_generation: int | None
    jobs: list[str]
    layers_invalidated: list[int]
    received_at: str
    deactivated_at: str | None
    approximated_at: str | None
    retraining_at: str | None
    completed_at: str | None
    failed_at: str | None


class DeletionPage(TypedDict):
    items: list[Deletion]
    next_cursor: str | None


HashScheme = Literal["sha256", "hmac-sha256"]


class CertifiedLayer(TypedDict):
    layer_id: int
    artifact: str | None
    artifact_deleted: bool
    collected_at: str | None
    artifact_in_use: bool


class ApproximateLayer(CertifiedLayer):
    method: str | None
    method_reason: str | None
    served: bool


class AuditLink(TypedDict):
    seq: int
    action: str
    hash: str


AuditResult = Literal["passed", "failed", "inconclusive"]


class CertifiedAudit(TypedDict):
    """An exactness audit on a certificate: after the deletion completed, its shards' layers
    retrained from scratch and compared."""

    job_id: str
    at: str
    result: AuditResult
    layers_checked: int
    mismatched: list[int]
    audit_seq: int
    audit_hash: str
    base_model_sha256: str | None


class Certificate(TypedDict):
    """What a deletion removed, as counts, keyed hashes and artifact digests (no personal data)."""

    deletion_id: str
    model_id: str
    base_model: BaseModelRef
    status: DeletionState
    issued_at: str
    received_at: str
    deactivated_at: str | None
    approximated_at: str | None
    completed_at: str | None
    unlearning: Literal["pending", "approximate", "exact"]
    counts: DeletionCounts
    hash_scheme: HashScheme
    sample_id_hashes: list[str]
    subject_hash: str | None
    payloads_deleted: bool
    payloads_purged_at: str | None
    layers_invalidated: list[CertifiedLayer]
    invalidated_artifacts_deleted: bool
    layers_approximated: list[ApproximateLayer]
    layers_retrained: list[CertifiedLayer]
    jobs: list[str]
    audit_chain: str
    audit_entries: list[AuditLink]
    audit_chain_verified: bool
    audit_verification: NotRequired[AuditVerification | None]
    exactness_audits: list[CertifiedAudit]


# --- the audit log --------------------------------------------------------------------------


class AuditEntry(TypedDict):
    seq: int
    at: str
    actor: str
    action: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


class FullAuditVerification(TypedDict):
    """The service's last full verification of a chain (every entry re-hashed)."""

    at: str
    through_seq: int
    ok: bool
    first_bad_seq: int | None
    reason: str | None


class AuditVerification(TypedDict):
    """The service's own check of the chain (:func:`verify_audit_chain` is yours): the entries
    after its checkpoint are re-hashed at each read, the rest by the last full verification."""

    ok: bool
    entries: int
    first_bad_seq: int | None
    reason: str | None
    verified_through_seq: NotRequired[int]
    verified_at: NotRequired[str | None]
    full_verification: NotRequired[FullAuditVerification | None]


class AuditPage(TypedDict):
    chain: str
    entries: list[AuditEntry]
    next_after_seq: int | None
    next_cursor: NotRequired[str | None]
    verification: AuditVerification


# --- exactness audits ------------------------------------------------------------------------


class LayerCheck(TypedDict):
    """One layer of an audit: its recorded digest against the one retrained from scratch."""

    layer_id: int
    shard: int
    sequence: int
    position: int
    artifact: str | None
    recomputed: str | None
    stored_digest: str | None
    match: bool | None
    problem: str | None
    skipped: str | None


class ExactnessAudit(TypedDict):
    id: str
    model_id: str
    base_model: str | None  # the base model it retrained on, once it ran
    base_model_sha256: str | None
    status: str  # the job's: queued, running, succeeded, failed
    result: AuditResult | None
    shards: list[int]
    layers_checked: int | None
    layers_skipped: int | None
    mismatched: list[int]
    note: str | None
    layers: list[LayerCheck]
    audit_seq: int | None
    job_url: str
    audit_url: str
    requested_at: str
    started_at: str | None
    finished_at: str | None


class DeletionVerification(TypedDict):
    deletion_id: str
    included: bool
    scheme: HashScheme


# --- keys -----------------------------------------------------------------------------------


class ApiKey(TypedDict):
    id: str
    name: str
    prefix: str
    role: str
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


class IssuedKey(TypedDict):
    key: ApiKey
    token: str


class SecretRotated(TypedDict):
    """The identifier secret's version now current (never the secret itself)."""

    version: int


# --- webhooks -------------------------------------------------------------------------------

WebhookEventType = Literal[
    "deletion.deactivated",
    "deletion.approximated",
    "deletion.completed",
    "deletion.failed",
    "model.ready",
    "exactness_audit.finished",
]
WEBHOOK_EVENT_TYPES: tuple[str, ...] = get_args(WebhookEventType)


class Webhook(TypedDict):
    id: str
    url: str
    events: list[str]
    description: str | None
    created_at: str
    secret_rotated_at: str | None


class WebhookWithSecret(Webhook):
    """A webhook as created or rotated: ``secret`` (``whsec_...``) appears only in this answer."""

    secret: str


class DeliveryAttempt(TypedDict):
    at: str
    status_code: int | None
    error: str | None
    duration_ms: int


class Delivery(TypedDict):
    id: str
    webhook_id: str
    event_id: str
    event_type: str
    state: Literal["pending", "delivered", "failed"]
    attempt_count: int
    next_attempt_at: str | None
    last_status_code: int | None
    created_at: str
    delivered_at: str | None
    attempts: NotRequired[list[DeliveryAttempt]]


@dataclass(frozen=True)
class WebhookEvent:
    """A verified webhook delivery's body."""

    id: str
    type: str
    created_at: datetime
    tenant_id: uuid.UUID
    data: dict[str, Any]
    raw: dict[str, Any] = field(repr=False, compare=False)
