"""``/models``: create a model, read it, register its training samples."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, status

from service.api.auth import CurrentKey
from service.api.deps import SessionDep, SettingsDep
from service.api.problems import PROBLEM_TYPE_BASE, Problem
from service.models import service
from service.models.schemas import (
    ModelCreate,
    ModelPublic,
    SampleRowError,
    SamplesCreate,
    SamplesResult,
)
from unlearning.s3t.backbone import backbone_layer_count

router = APIRouter(prefix="/models", tags=["models"])
PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or unknown API key"},
    404: {"model": Problem, "description": "No such model for this key's tenant"},
    422: {"model": Problem, "description": "Invalid input"},
}


@router.post("", status_code=status.HTTP_201_CREATED, responses=PROBLEMS)
def create_model(
    body: ModelCreate, key: CurrentKey, session: SessionDep, settings: SettingsDep
) -> ModelPublic:
    """Create a model from its S3T settings; its slice orders are planned here."""
    layers = backbone_layer_count(settings.backbone_path)
    model = service.create_model(session, key.tenant_id, body, backbone_layers=layers)
    return service.model_public(session, model)


@router.get("/{model_id}", responses=PROBLEMS)
def read_model(model_id: uuid.UUID, key: CurrentKey, session: SessionDep) -> ModelPublic:
    """A model of this key's tenant."""
    return service.model_public(session, service.get_model(session, key.tenant_id, model_id))


@router.post("/{model_id}/samples", responses=PROBLEMS)
def register_samples(
    model_id: uuid.UUID, body: SamplesCreate, key: CurrentKey, session: SessionDep
) -> SamplesResult:
    """Register samples in bulk: valid rows are stored, each bad or duplicate row is reported."""
    result = service.register_samples(session, key.tenant_id, model_id, body.samples)
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
    )
