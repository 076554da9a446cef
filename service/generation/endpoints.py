"""``/models/{id}/generate`` and ``/models/{id}/score``: a causal LM's answers. Write-free, and
authenticated and limited as predictions are."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from service.api.auth import CurrentKey
from service.api.deps import SessionDep, SettingsDep, end_read
from service.api.problems import problem_responses
from service.generation import service
from service.generation.schemas import (
    GenerateRequest,
    GenerateResponse,
    ScoreRequest,
    ScoreResponse,
)
from service.models.endpoints import RegistryDep

router = APIRouter(prefix="/models", tags=["models"])

STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The generation (JSON), or with `stream: true` server-sent events: "
        "`token` events (GeneratedPiece), then `done` (GenerateResponse) or `error` (a problem).",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


@router.post(
    "/{model_id}/generate",
    responses={**STREAM, **problem_responses(401, 404, 409, 422, 429, 503)},
    response_model=GenerateResponse,
)
def generate(
    model_id: uuid.UUID,
    body: GenerateRequest,
    key: CurrentKey,
    session: SessionDep,
    registry: RegistryDep,
    settings: SettingsDep,
) -> GenerateResponse | StreamingResponse:
    """Generate a response of a causal LM's current valid ensemble; every token comes from
    layers that were valid when it was computed, and the answer names them."""
    prompt = service.lm_prompt(session, key.tenant_id, model_id, body)
    end_read(session)
    generation = service.start_generation(registry, model_id, prompt, body, settings)
    if not body.stream:
        return service.generate(generation, body)
    return StreamingResponse(
        service.server_sent_events(generation, body),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        background=BackgroundTask(generation.close),
    )


@router.post("/{model_id}/score", responses=problem_responses(401, 404, 409, 422, 503))
def score(
    model_id: uuid.UUID,
    body: ScoreRequest,
    key: CurrentKey,
    session: SessionDep,
    registry: RegistryDep,
    settings: SettingsDep,
) -> ScoreResponse:
    """Each completion's token log-probabilities after the prompt, and their sum: what
    applications rank with and what an auditor measures memorisation with."""
    prompt = service.lm_prompt(session, key.tenant_id, model_id, body)
    end_read(session)
    return service.score(registry, model_id, prompt, body, settings)
