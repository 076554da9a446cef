"""``/base-models``: the catalogue of base models a model can fine-tune (read-only here:
operators register and remove them with ``unlearn base-models``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from service.api.auth import CurrentKey
from service.api.deps import SessionDep, SettingsDep
from service.api.problems import problem_responses
from service.base_models import service
from service.base_models.schemas import BaseModelList, BaseModelPublic
from service.db.models.base_models import NAME_MAX

router = APIRouter(prefix="/base-models", tags=["base-models"])
PROBLEMS = problem_responses(401, 404, 422)

Name = Annotated[str, Path(min_length=1, max_length=NAME_MAX)]


@router.get("", responses=PROBLEMS)
def list_base_models(_key: CurrentKey, session: SessionDep, settings: SettingsDep) -> BaseModelList:
    """Every registered base model, by name."""
    return service.list_base_models(session, settings)


@router.get("/{name}", responses=PROBLEMS)
def read_base_model(
    name: Name, _key: CurrentKey, session: SessionDep, settings: SettingsDep
) -> BaseModelPublic:
    """One base model: its family, modality, size and the digest of its weights."""
    return service.read_base_model(session, settings, name)
