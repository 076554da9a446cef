"""Deletion requests as the API shows them: one, a page, or the 202 of a new one."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from service.db.models import DeletionRequest, DeletionStatus
from service.db.repositories import DeletionRepository, LineageRepository
from service.deletions.schemas import DeletionCounts, DeletionPage, DeletionPublic, SubjectOutcome
from service.deletions.service import Accepted
from service.errors import InvalidInputError


def get_deletion(session: Session, tenant_id: uuid.UUID, deletion_id: uuid.UUID) -> DeletionPublic:
    request = DeletionRepository.from_session(session).get(deletion_id, tenant_id=tenant_id)
    return deletion_public(session, request)


def deletion_public(session: Session, request: DeletionRequest) -> DeletionPublic:
    return deletions_public(session, [request])[0]


def accepted_public(session: Session, accepted: Accepted) -> DeletionPublic:
    """The 202's body: from what the request wrote, or read back for a replayed key."""
    if not accepted.created:
        return deletion_public(session, accepted.request)
    return _public(accepted.request, accepted.unknown_ids, accepted.job_ids, accepted.invalidated)


def deletions_public(session: Session, requests: list[DeletionRequest]) -> list[DeletionPublic]:
    """The public view of requests, with two queries for all of them."""
    deletions = DeletionRepository.from_session(session)
    ids = [r.id for r in requests]
    unknown = deletions.unknown_ids_many(ids)
    jobs = deletions.jobs_of_many(ids)
    invalidated = LineageRepository.from_session(session).invalidated_by_many(ids)
    return [
        _public(
            request,
            unknown.get(request.id, []),
            [j.id for j in jobs.get(request.id, [])],
            invalidated.get(request.id, []),
        )
        for request in requests
    ]


def _public(
    request: DeletionRequest,
    unknown_ids: list[str],
    job_ids: list[uuid.UUID],
    invalidated: list[int],
) -> DeletionPublic:
    return DeletionPublic(
        id=request.id,
        model_id=request.model_id,
        status=request.status.value,
        partial=request.partial,
        unknown_ids=unknown_ids,
        subject=_subject_outcome(request),
        counts=DeletionCounts.of(request),
        failure_reason=request.failure_reason,
        serving_generation=request.serving_generation,
        jobs=job_ids,
        layers_invalidated=invalidated,
        received_at=request.received_at,
        deactivated_at=request.deactivated_at,
        approximated_at=request.approximated_at,
        retraining_at=request.retraining_at,
        completed_at=request.completed_at,
        failed_at=request.failed_at,
    )


def _subject_outcome(request: DeletionRequest) -> SubjectOutcome | None:
    """What a subject's request found: its live samples, none left (an earlier request
    deleted them), or no sample of that subject ever (``partial``)."""
    if request.subject_hash is None:
        return None
    if request.n_deleted > 0:
        return "deleted"
    return "unknown" if request.partial else "already_deleted"


def list_deletions(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None = None,
    model_id: uuid.UUID | None = None,
    status: DeletionStatus | None = None,
) -> DeletionPage:
    rows = DeletionRepository.from_session(session).list(
        tenant_id,
        limit=limit + 1,
        model_id=model_id,
        status=status,
        before=_decode_cursor(cursor) if cursor else None,
    )
    page = rows[:limit]
    more = len(rows) > limit
    return DeletionPage(
        items=deletions_public(session, page),
        next_cursor=_encode_cursor(page[-1]) if more and page else None,
    )


def _encode_cursor(request: DeletionRequest) -> str:
    raw = f"{request.received_at.isoformat()}|{request.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, _, request_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        received = datetime.fromisoformat(at)
        if received.tzinfo is None:
            received = received.replace(tzinfo=UTC)
        return received, uuid.UUID(request_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise InvalidInputError("`cursor` is not a cursor this API returned") from error
