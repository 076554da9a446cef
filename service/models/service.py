"""Creating models and registering their samples. Flushes, never commits."""

from __future__ import annotations

import base64
import binascii
import time
import uuid

from sqlalchemy.orm import Session

from service.approximation.service import check_method
from service.audit.schemas import AuditVerification
from service.audit.service import check_chain, verify_fully
from service.base_models.schemas import BaseModelRef
from service.db.models import BaseModel, Job, Model, Split, Task, UnlearningPolicy
from service.db.repositories import (
    AuditRepository,
    BaseModelRepository,
    ModelRepository,
    NewSample,
    SampleRepository,
)
from service.db.repositories.audit import audit_chain
from service.db.repositories.samples import EVAL_CAP, BulkResult
from service.errors import (
    BaseModelNotFoundError,
    InvalidInputError,
    InvalidModelConfigError,
    WrongModalityError,
    WrongTaskError,
)
from service.images import ImageLimits, image_from_base64
from service.models.modality import modality_of
from service.models.schemas import (
    AuditEntryOut,
    AuditPage,
    ModelCreate,
    ModelPublic,
    PredictionOut,
    PredictRequest,
    PredictResponse,
    SampleIn,
    ShardStatusBrief,
    SliceBalance,
)
from service.models.status import unbalanced_text
from service.observability.metrics import observe_prediction
from service.serving.registry import ServingRegistry
from service.training import scheduling
from unlearning.families import Modality, family_named
from unlearning.s3t import S3TConfig
from unlearning.s3t.config import Task as UnlearningTask
from unlearning.s3t.sequences import plan_sequences
from unlearning.sharding import PlacementPolicy, unbalanced_slices

#: Settings that live in the model's own columns rather than in its ``config``.
_COLUMNS = ("n_shards", "n_slices", "budget", "task", "n_labels")


def create_model(
    session: Session,
    tenant_id: uuid.UUID,
    data: ModelCreate,
    *,
    default_base_model: str,
    default_profile: str,
) -> Model:
    """Validate the S3T settings against the named base model, plan the slice orders and
    create the model's lineage.

    ``default_base_model``: the base model of a model that names none; each of the
    ``n_slices`` blocks needs one of its layers. ``default_profile``: the compute profile of a
    model that names none.
    """
    base = _base_model(session, data.base_model or default_base_model)
    _check_task_fits(data, base)
    if data.n_slices > base.n_layers:
        raise InvalidModelConfigError(
            f"`n_slices` ({data.n_slices}) exceeds the {base.n_layers} layers of base model "
            f"{base.name!r}"
        )
    try:
        method_config = check_method(
            data.approximate_method,
            data.method_config,
            UnlearningTask(data.task),
            Modality(base.modality.value),
        )
    except InvalidInputError as error:
        raise InvalidModelConfigError(error.detail) from error
    settings = data.model_dump(
        exclude={
            "name",
            "labels",
            "unlearning_policy",
            "approximate_method",
            "method_config",
            "compute_profile",
            "placement",
            "min_live_shards",
            "grade_approximations",
            "base_model",
        }
    )
    if settings["target_modules"] is None:
        settings["target_modules"] = list(base.default_targets)
    settings["n_labels"] = len(data.labels or []) if data.task == "classification" else 1
    if settings["deletion_prior"] is not None:
        settings["deletion_prior"] = tuple(settings["deletion_prior"])
    settings["target_modules"] = tuple(settings["target_modules"])
    if data.min_live_shards > data.n_shards:
        raise InvalidModelConfigError(
            f"`min_live_shards` ({data.min_live_shards}) exceeds `n_shards` ({data.n_shards})"
        )
    if data.task == "classification" and settings["n_labels"] < 2:
        raise InvalidModelConfigError("`labels` must list at least two distinct labels")
    try:
        config = S3TConfig(**settings)
        orders = plan_sequences(config)
    except ValueError as error:
        raise InvalidModelConfigError(str(error)) from error
    stored = {k: v for k, v in config.to_dict().items() if k not in _COLUMNS}
    return ModelRepository.from_session(session).create(
        tenant_id=tenant_id,
        name=data.name,
        task=Task(data.task),
        n_shards=config.n_shards,
        n_slices=config.n_slices,
        budget=config.budget,
        sequence_orders=orders,
        labels=data.labels,
        config=stored,
        unlearning_policy=UnlearningPolicy(data.unlearning_policy),
        approximate_method=data.approximate_method,
        method_config=method_config or None,
        compute_profile=data.compute_profile or default_profile,
        base_model_id=base.id,
        placement=PlacementPolicy(data.placement),
        min_live_shards=data.min_live_shards,
        grade_approximations=data.grade_approximations,
    )


def _check_task_fits(data: ModelCreate, base: BaseModel) -> None:
    """A causal LM needs a decoder base model, and a decoder serves causal LMs only (it has no
    pooled state for a head); a causal LM has no labels."""
    decoder = family_named(base.family).causal
    if data.task == "causal_lm" and not decoder:
        raise InvalidModelConfigError(
            f"`task` causal_lm needs a decoder base model (family llama, mistral, qwen2 or "
            f"gpt2); {base.name!r} is a {base.family} {base.modality.value} encoder",
            base_model=base.name,
        )
    if data.task != "causal_lm" and decoder:
        raise InvalidModelConfigError(
            f"base model {base.name!r} is a {base.family} decoder: it serves `task` causal_lm "
            f"only, not {data.task}",
            base_model=base.name,
        )
    if data.task == "causal_lm" and data.labels is not None:
        raise InvalidModelConfigError(
            "`labels` are for classification: a causal_lm model learns the responses of its samples"
        )


def _base_model(session: Session, name: str) -> BaseModel:
    """The named base model, or a 422 problem naming the registered ones."""
    try:
        return BaseModelRepository.from_session(session).by_name(name)
    except BaseModelNotFoundError as error:
        raise InvalidModelConfigError(
            f"`base_model`: {error.detail}", known=error.extra.get("known", [])
        ) from error


def register_samples(
    session: Session,
    tenant_id: uuid.UUID,
    model_id: uuid.UUID,
    rows: list[SampleIn],
    limits: ImageLimits | None = None,
    *,
    eval_cap: int = EVAL_CAP,
) -> BulkResult:
    """Store the valid rows; a row whose input is not what the model's base model reads (an
    image out of ``limits``, or an evaluation row past ``eval_cap``) is reported with the other
    bad rows."""
    model = get_model(session, tenant_id, model_id)
    return SampleRepository.from_session(session).add_many(
        model,
        [
            NewSample(
                external_id=row.external_id,
                label=row.label,
                text=row.text,
                features=row.features,
                subject_id=row.subject_id,
                image=row.image,
                prompt=row.prompt,
                response=row.response,
                messages=None
                if row.messages is None
                else [(m.role, m.content) for m in row.messages],
                split=Split(row.split),
            )
            for row in rows
        ],
        modality=modality_of(model),
        limits=limits,
        eval_cap=eval_cap,
    )


def eval_count(session: Session, tenant_id: uuid.UUID, model_id: uuid.UUID) -> int:
    """How many live samples the model's evaluation split holds."""
    model = get_model(session, tenant_id, model_id)
    return SampleRepository.from_session(session).eval_count(model.id)


def prediction_inputs(
    session: Session,
    tenant_id: uuid.UUID,
    model_id: uuid.UUID,
    request: PredictRequest,
    limits: ImageLimits,
) -> list[str] | list[bytes]:
    """The inputs of a prediction, checked against the model (a 404 for another tenant's):
    texts for a text model, the decoded images (each within ``limits``) for an image model."""
    model = get_model(session, tenant_id, model_id)
    if model.task is Task.causal_lm:
        raise WrongTaskError(
            f"model {model_id} is a causal LM: it answers POST /models/{model_id}/generate "
            f"(text) and POST /models/{model_id}/score (completions' log-probabilities), not "
            "predict"
        )
    modality = modality_of(model)
    if modality is Modality.IMAGE:
        if request.images is None:
            raise WrongModalityError(
                "this model's base model reads images: give `images` (base64 of PNG or JPEG "
                "images), not `texts`"
            )
        return [
            image_from_base64(text, limits, name=f"images[{i}]").data
            for i, text in enumerate(request.images)
        ]
    if request.texts is None:
        raise WrongModalityError("this model's base model reads texts: give `texts`, not `images`")
    return list(request.texts)


def slice_balance(session: Session, tenant_id: uuid.UUID, model_id: uuid.UUID) -> SliceBalance:
    """How the model's live samples fill its slices, and which slices are far from the mean."""
    model = get_model(session, tenant_id, model_id)
    sizes = SampleRepository.from_session(session).slice_sizes(model)
    cells = [size for row in sizes for size in row]
    return SliceBalance(
        sizes=sizes,
        mean=round(sum(cells) / len(cells), 2),
        unbalanced=[unbalanced_text(*cell) for cell in unbalanced_slices(sizes)],
    )


def get_model(session: Session, tenant_id: uuid.UUID, model_id: uuid.UUID) -> Model:
    """The model, or a 404 problem, also when it belongs to another tenant."""
    return ModelRepository.from_session(session).get(model_id, tenant_id=tenant_id)


def model_public(session: Session, model: Model) -> ModelPublic:
    sequences = ModelRepository.from_session(session).sequences(model.id)
    first_shard = sequences[0].shard_id if sequences else None
    return ModelPublic(
        id=model.id,
        name=model.name,
        base_model=BaseModelRef.of(model.base_model),
        task=model.task.value,
        labels=model.labels,
        n_shards=model.n_shards,
        n_slices=model.n_slices,
        budget=model.budget,
        sequence_orders=[list(s.slice_order) for s in sequences if s.shard_id == first_shard],
        config=model.config,
        status=model.status.value,
        serving_generation=model.serving_generation,
        unlearning_policy=model.unlearning_policy.value,
        approximate_method=model.approximate_method,
        method_config=model.method_config,
        placement=model.placement.value,
        min_live_shards=model.min_live_shards,
        grade_approximations=model.grade_approximations,
        compute_profile=model.compute_profile,
        created_at=model.created_at,
    )


def train_model(session: Session, tenant_id: uuid.UUID, model_id: uuid.UUID, *, actor: str) -> Job:
    """Queue the training of every sequence; returns the model-wide job."""
    model = ModelRepository.from_session(session).get_for_update(
        get_model(session, tenant_id, model_id).id
    )
    return scheduling.start_training(session, model, actor=actor)


def audit_page(
    session: Session,
    tenant_id: uuid.UUID,
    model_id: uuid.UUID,
    *,
    after_seq: int,
    limit: int,
    cursor: str | None = None,
) -> AuditPage:
    """A page of the model's audit chain and the chain's incremental verification: the entries
    since the last read and those of the page are re-hashed, not the history."""
    model = get_model(session, tenant_id, model_id)
    if cursor is not None:
        after_seq = _decode_audit_cursor(cursor)
    chain = audit_chain(model.id)
    entries = AuditRepository.from_session(session).entries(
        chain, after_seq=after_seq, limit=limit + 1
    )
    page = entries[:limit]
    check = check_chain(session, chain, returned=page)
    next_after = page[-1].seq if len(entries) > limit else None
    return AuditPage(
        chain=chain,
        entries=[
            AuditEntryOut(
                seq=e.seq,
                at=e.at,
                actor=e.actor,
                action=e.action,
                payload=e.payload,
                prev_hash=e.prev_hash,
                hash=e.hash,
            )
            for e in page
        ],
        next_after_seq=next_after,
        next_cursor=_encode_audit_cursor(next_after) if next_after is not None else None,
        verification=check,
    )


def _encode_audit_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"audit|{seq}".encode()).decode()


def _decode_audit_cursor(cursor: str) -> int:
    try:
        tag, _, seq = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        if tag != "audit" or not seq.isdigit():
            raise ValueError(cursor)
        return int(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise InvalidInputError("`cursor` is not a cursor this API returned") from error


def verify_audit(session: Session, tenant_id: uuid.UUID, model_id: uuid.UUID) -> AuditVerification:
    """The full verification of the model's chain, recorded for the reads, status and dashboard."""
    return verify_fully(session, audit_chain(get_model(session, tenant_id, model_id).id))


def predict(
    registry: ServingRegistry,
    tenant_id: uuid.UUID,
    model_id: uuid.UUID,
    contents: list[str] | list[bytes],
) -> PredictResponse:
    """Predictions of the model's current valid ensemble, with the generation that answered.

    Runs outside the request's transaction: the registry reads the generation itself."""
    started = time.perf_counter()
    served = registry.predict(model_id, contents)
    observe_prediction(tenant_id, len(contents), time.perf_counter() - started)
    outputs = served.prediction.outputs
    labels = served.model.labels
    if labels is not None:
        predictions = [
            PredictionOut(label=labels[int(row.argmax())], scores=row.tolist(), value=None)
            for row in outputs
        ]
    else:
        predictions = [
            PredictionOut(label=None, scores=None, value=float(v)) for v in outputs.tolist()
        ]
    return PredictResponse(
        serving_generation=served.generation,
        shards=[
            ShardStatusBrief(
                shard=s.shard,
                sequence=s.sequence,
                stages=s.length,
                approximate_stages=s.approximate_stages,
                layers=list(s.layer_ids),
            )
            for s in served.model.shards
        ],
        predictions=predictions,
    )
