"""``/models``: create a model, read it, register its training samples."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from service.api.auth import CurrentKey
from service.api.deps import SessionDep, SettingsDep, end_read
from service.api.problems import PROBLEM_TYPE_BASE, problem_responses
from service.api.ratelimit import AdminWriterKey, WriterKey
from service.audit.schemas import AuditVerification
from service.engine import default_compute_profile
from service.images import ImageLimits
from service.models import service
from service.models.schemas import (
    AuditPage,
    ModelCreate,
    ModelPublic,
    ModelStatusPublic,
    PredictRequest,
    PredictResponse,
    SampleRowError,
    SamplesCreate,
    SamplesResult,
    TrainAccepted,
)
from service.models.status import model_status
from service.quality.schemas import QualityReport
from service.quality.views import quality_report
from service.serving.registry import ServingRegistry

router = APIRouter(prefix="/models", tags=["models"])
PROBLEMS = problem_responses(401, 404, 409, 413, 422, 429)


def get_registry(request: Request) -> ServingRegistry:
    registry: ServingRegistry = request.app.state.serving
    return registry


RegistryDep = Annotated[ServingRegistry, Depends(get_registry)]


@router.post("", status_code=status.HTTP_201_CREATED, responses=PROBLEMS)
def create_model(
    body: ModelCreate, key: WriterKey, session: SessionDep, settings: SettingsDep
) -> ModelPublic:
    """Create a model from its S3T settings; its slice orders are planned here."""
    model = service.create_model(
        session,
        key.tenant_id,
        body,
        default_base_model=settings.default_base_model,
        default_profile=default_compute_profile(settings),
    )
    return service.model_public(session, model)


@router.get("/{model_id}", responses=PROBLEMS)
def read_model(model_id: uuid.UUID, key: CurrentKey, session: SessionDep) -> ModelPublic:
    """A model of this key's tenant."""
    return service.model_public(session, service.get_model(session, key.tenant_id, model_id))


@router.post("/{model_id}/samples", responses=PROBLEMS)
def register_samples(
    model_id: uuid.UUID,
    body: SamplesCreate,
    key: WriterKey,
    session: SessionDep,
    settings: SettingsDep,
) -> SamplesResult:
    """Register samples in bulk: valid rows are stored, each bad or duplicate row is reported.
    Rows with `split: "eval"` form the model's evaluation split: never trained on, they are
    what its served quality is measured on."""
    limits = ImageLimits.from_settings(settings)
    result = service.register_samples(
        session,
        key.tenant_id,
        model_id,
        body.samples,
        limits,
        eval_cap=settings.eval_max_samples,
    )
    return SamplesResult(
        stored=len(result.stored),
        errors=[
            SampleRowError(
                row=e.row,
                external_id=e.external_id,
                type=PROBLEM_TYPE_BASE + e.error.slug,
                title=e.error.title,
                detail=e.error.detail,
            )
            for e in result.errors
        ],
        balance=service.slice_balance(session, key.tenant_id, model_id),
        eval_samples=service.eval_count(session, key.tenant_id, model_id),
    )


@router.post("/{model_id}/train", status_code=status.HTTP_202_ACCEPTED, responses=PROBLEMS)
def train_model(model_id: uuid.UUID, key: WriterKey, session: SessionDep) -> TrainAccepted:
    """Train every shard, sequence and stage on the workers; poll the job for progress."""
    job = service.train_model(session, key.tenant_id, model_id, actor=f"key:{key.prefix}")
    return TrainAccepted(job_id=job.id, job_url=f"/jobs/{job.id}", model_status="training")


@router.get("/{model_id}/status", responses=PROBLEMS)
def read_status(model_id: uuid.UUID, key: CurrentKey, session: SessionDep) -> ModelStatusPublic:
    """Per shard: valid prefixes, the serving choice, pending retrains and deleted samples."""
    return model_status(session, service.get_model(session, key.tenant_id, model_id))


@router.get("/{model_id}/quality", responses=PROBLEMS)
def read_quality(
    model_id: uuid.UUID,
    key: CurrentKey,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> QualityReport:
    """Measured quality over time on the evaluation split, and how each approximate method's
    passes compared with their exact retrains on this model (what `auto` chooses from)."""
    model = service.get_model(session, key.tenant_id, model_id)
    return quality_report(session, model, limit=limit)


@router.post("/{model_id}/predict", responses=problem_responses(401, 404, 409, 422, 503))
def predict(
    model_id: uuid.UUID,
    body: PredictRequest,
    key: CurrentKey,
    session: SessionDep,
    registry: RegistryDep,
    settings: SettingsDep,
) -> PredictResponse:
    """Predictions of the current valid ensemble; `serving_generation` says which one answered."""
    limits = ImageLimits.from_settings(settings)
    contents = service.prediction_inputs(session, key.tenant_id, model_id, body, limits)
    end_read(session)
    return service.predict(registry, key.tenant_id, model_id, contents)


@router.get("/{model_id}/audit", responses=PROBLEMS)
def read_audit(
    model_id: uuid.UUID,
    key: CurrentKey,
    session: SessionDep,
    after_seq: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="`next_cursor` of the page before (or `after_seq`)."),
    ] = None,
) -> AuditPage:
    """The model's hash-chained audit log, a page at a time, with the chain's verification."""
    return service.audit_page(
        session, key.tenant_id, model_id, after_seq=after_seq, limit=limit, cursor=cursor
    )


@router.post("/{model_id}/audit/verify", responses=PROBLEMS)
def verify_audit(
    model_id: uuid.UUID, key: AdminWriterKey, session: SessionDep
) -> AuditVerification:
    """Re-hash the model's whole audit chain (admin) and record the result for reads and status."""
    return service.verify_audit(session, key.tenant_id, model_id)
