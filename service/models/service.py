"""Creating models and registering their samples. Flushes, never commits."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from service.db.models import Model, Task
from service.db.repositories import ModelRepository, NewSample, SampleRepository
from service.db.repositories.samples import BulkResult
from service.errors import InvalidModelConfigError
from service.models.schemas import ModelCreate, ModelPublic, SampleIn
from unlearning.s3t import S3TConfig
from unlearning.s3t.sequences import plan_sequences

#: Settings that live in the model's own columns rather than in its ``config``.
_COLUMNS = ("n_shards", "n_slices", "budget", "task", "n_labels")


def create_model(
    session: Session, tenant_id: uuid.UUID, data: ModelCreate, *, backbone_layers: int
) -> Model:
    """Validate the S3T settings, plan the slice orders and create the model's lineage.

    ``backbone_layers``: the encoder's layer count; each of the ``n_slices`` blocks needs one.
    """
    if data.n_slices > backbone_layers:
        raise InvalidModelConfigError(
            f"`n_slices` ({data.n_slices}) exceeds the backbone's {backbone_layers} layers"
        )
    settings = data.model_dump(exclude={"name", "labels"})
    settings["n_labels"] = len(data.labels or []) if data.task == "classification" else 1
    if settings["deletion_prior"] is not None:
        settings["deletion_prior"] = tuple(settings["deletion_prior"])
    settings["target_modules"] = tuple(settings["target_modules"])
    if data.task == "classification" and settings["n_labels"] < 2:
        raise InvalidModelConfigError("`labels` must list at least two distinct labels")
    try:
        config = S3TConfig(**settings)
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
        sequence_orders=plan_sequences(config),
        labels=data.labels,
        config=stored,
    )


def register_samples(
    session: Session, tenant_id: uuid.UUID, model_id: uuid.UUID, rows: list[SampleIn]
) -> BulkResult:
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
            )
            for row in rows
        ],
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
        task=model.task.value,
        labels=model.labels,
        n_shards=model.n_shards,
        n_slices=model.n_slices,
        budget=model.budget,
        sequence_orders=[list(s.slice_order) for s in sequences if s.shard_id == first_shard],
        config=model.config,
        status=model.status.value,
        serving_generation=model.serving_generation,
        created_at=model.created_at,
    )
