"""``/models/{id}/exactness-audits``: retrain shards from scratch and compare with what is
served (admin keys request; any key of the tenant reads)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from service.api.auth import CurrentKey
from service.api.deps import SessionDep
from service.api.problems import problem_responses
from service.api.ratelimit import AdminWriterKey
from service.exactness import service
from service.exactness.schemas import ExactnessAuditCreate, ExactnessAuditPublic

router = APIRouter(prefix="/models", tags=["exactness audits"])


@router.post(
    "/{model_id}/exactness-audits",
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_responses(401, 403, 404, 409, 413, 422, 429),
)
def request_exactness_audit(
    model_id: uuid.UUID,
    key: AdminWriterKey,
    session: SessionDep,
    response: Response,
    body: ExactnessAuditCreate | None = None,
) -> ExactnessAuditPublic:
    """Retrain the chosen shards' sequences from scratch on today's live samples, into a
    scratch store, and compare each active exact layer's digest with its recorded artifact and
    with the bytes stored; poll `audit_url` for the per-layer result (409 unless trained)."""
    job = service.request_audit(
        session,
        key.tenant_id,
        model_id,
        body.shards if body is not None else None,
        actor=f"key:{key.prefix}",
    )
    audit = service.describe(session, job)
    response.headers["Location"] = audit.audit_url
    return audit


@router.get("/{model_id}/exactness-audits", responses=problem_responses(401, 404, 422))
def list_exactness_audits(
    model_id: uuid.UUID,
    key: CurrentKey,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> list[ExactnessAuditPublic]:
    """The model's audits, newest first (their per-layer results: `GET` one)."""
    return service.latest_audits(session, key.tenant_id, model_id, limit=limit)


@router.get("/{model_id}/exactness-audits/{audit_id}", responses=problem_responses(401, 404, 422))
def read_exactness_audit(
    model_id: uuid.UUID, audit_id: uuid.UUID, key: CurrentKey, session: SessionDep
) -> ExactnessAuditPublic:
    """Status, result and per-layer comparison of one audit."""
    return service.get_audit(session, key.tenant_id, model_id, audit_id)
