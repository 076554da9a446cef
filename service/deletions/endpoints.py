"""``/deletions``: request a deletion, follow it, list them, get its certificate, and check
whether an identifier was part of it."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from service.api.auth import CurrentKey
from service.api.deps import SessionDep, SettingsDep
from service.api.problems import problem_responses
from service.api.ratelimit import VerifierKey, WriterKey
from service.approximation.service import ApproximationSettings
from service.db.models import DeletionStatus
from service.db.repositories.deletions import key_race_lost
from service.deletions import certificate, service, views
from service.deletions.schemas import (
    ClassDeletionCreate,
    DeletionCertificate,
    DeletionCreate,
    DeletionPage,
    DeletionPublic,
    DeletionVerification,
    DeletionVerify,
)
from service.settings import Settings

router = APIRouter(prefix="/deletions", tags=["deletions"])
class_router = APIRouter(prefix="/models", tags=["deletions"])
PROBLEMS = problem_responses(401, 404, 409, 413, 422, 429)
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Retries with the same key and body return the first request.",
    ),
]


@router.post("", status_code=status.HTTP_202_ACCEPTED, responses=PROBLEMS)
def create_deletion(
    body: DeletionCreate,
    key: WriterKey,
    session: SessionDep,
    response: Response,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> DeletionPublic:
    """Delete samples (by external id) or a data subject's samples from one model.

    Answers 202 once the samples' layers are deactivated and the request committed: from then
    on no prediction uses a layer that saw them. Their retraining continues in the background;
    poll the `Location`.
    """
    with key_race_lost():
        accepted = service.request_deletion(
            session,
            key.tenant_id,
            body,
            actor=f"key:{key.prefix}",
            idempotency_key=idempotency_key,
            approximation=_approximation(settings),
            retrain=settings.retrain_policy,
        )
        return _accepted(session, response, accepted)


@class_router.post(
    "/{model_id}/class-deletions", status_code=status.HTTP_202_ACCEPTED, responses=PROBLEMS
)
def create_class_deletion(
    model_id: uuid.UUID,
    body: ClassDeletionCreate,
    key: WriterKey,
    session: SessionDep,
    response: Response,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> DeletionPublic:
    """Every live sample of one class leaves the model: one deletion request (202, as for
    `POST /deletions`); on the `approximate` path a class-unlearning pass runs first."""
    with key_race_lost():
        accepted = service.request_class_deletion(
            session,
            key.tenant_id,
            model_id,
            body,
            actor=f"key:{key.prefix}",
            idempotency_key=idempotency_key,
            approximation=_approximation(settings),
            retrain=settings.retrain_policy,
        )
        return _accepted(session, response, accepted)


def _approximation(settings: Settings) -> ApproximationSettings:
    return ApproximationSettings(
        purge_deadline_s=settings.approximate_purge_deadline_s,
        auto_wait_s=settings.auto_approximate_wait_s,
        head_start_s=settings.approximate_head_start_s,
    )


def _accepted(
    session: SessionDep, response: Response, accepted: service.Accepted
) -> DeletionPublic:
    """The request's view, pointing at it (read inside ``key_race_lost``: the flush that loses
    a race for the key happens here at the latest)."""
    public = views.accepted_public(session, accepted)
    response.headers["Location"] = f"/deletions/{accepted.request.id}"
    return public


@router.post("/{deletion_id}/retry", status_code=status.HTTP_202_ACCEPTED, responses=PROBLEMS)
def retry_deletion(deletion_id: uuid.UUID, key: WriterKey, session: SessionDep) -> DeletionPublic:
    """Retry a `failed` deletion: its shards are retrained again (409 unless it failed)."""
    deletion = service.retry_deletion(
        session, key.tenant_id, deletion_id, actor=f"key:{key.prefix}"
    )
    return views.deletion_public(session, deletion)


@router.get("", responses=PROBLEMS)
def list_deletions(
    key: CurrentKey,
    session: SessionDep,
    model_id: uuid.UUID | None = None,
    status: DeletionStatus | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> DeletionPage:
    """This tenant's deletion requests, newest first, a page at a time."""
    return views.list_deletions(
        session, key.tenant_id, limit=limit, cursor=cursor, model_id=model_id, status=status
    )


@router.get("/{deletion_id}", responses=PROBLEMS)
def read_deletion(deletion_id: uuid.UUID, key: CurrentKey, session: SessionDep) -> DeletionPublic:
    """A deletion's status and the time of each phase."""
    return views.get_deletion(session, key.tenant_id, deletion_id)


@router.get("/{deletion_id}/certificate", responses=PROBLEMS)
def read_certificate(
    deletion_id: uuid.UUID, key: CurrentKey, session: SessionDep
) -> DeletionCertificate:
    """What the deletion removed, as counts, hashes and artifact digests; no personal data."""
    return certificate.deletion_certificate(session, key.tenant_id, deletion_id)


@router.post(
    "/{deletion_id}/verify",
    summary="Check whether an identifier was part of a deletion",
    responses=problem_responses(401, 404, 413, 422, 429),
)
def verify_deletion(
    deletion_id: uuid.UUID, body: DeletionVerify, key: VerifierKey, session: SessionDep
) -> DeletionVerification:
    """Answer whether a sample id or a subject id (exactly one) was part of this deletion.

    The certificate keeps only keyed hashes (HMAC-SHA-256 under a secret of the tenant that
    never leaves the service), which nobody can recompute from a guessed id; this call hashes
    the given identifier the same way and compares. The identifier travels in the body, never
    in the URL, and is neither stored nor logged. A read, as the certificate is: any key of the
    tenant; another tenant's deletion is a 404. Each answer tests one guessed identifier, so a
    key may make `UNLEARN_VERIFY_RATE_PER_MINUTE` checks a minute (then 429).
    """
    return certificate.verify_inclusion(session, key.tenant_id, deletion_id, body)
