"""Deletion requests: idempotent creation, items and the status lifecycle with timestamps."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from service.db.hashing import HashScheme, TenantHasher
from service.db.models import (
    DeletionItem,
    DeletionJob,
    DeletionRequest,
    DeletionStatus,
    ItemOutcome,
    Job,
    JobStatus,
)
from service.db.models.base import utcnow
from service.db.repositories.base import Repository
from service.errors import DeletionNotFoundError, IdempotencyConflictError, LineageError

S = DeletionStatus
# received -> deactivated -> (approximated ->) retraining -> completed; failed from anywhere.
_NEXT: dict[DeletionStatus, set[DeletionStatus]] = {
    S.received: {S.deactivated, S.failed},
    S.deactivated: {S.approximated, S.retraining, S.completed, S.failed},
    S.approximated: {S.retraining, S.completed, S.failed},
    S.retraining: {S.completed, S.failed},
    S.completed: set(),
    S.failed: {S.retraining},  # the retry path
}
_TIMESTAMP = {
    S.deactivated: "deactivated_at",
    S.approximated: "approximated_at",
    S.retraining: "retraining_at",
    S.completed: "completed_at",
    S.failed: "failed_at",
}


KEY_REUSED = "this Idempotency-Key was used for a different request"


@contextmanager
def key_race_lost() -> Iterator[None]:
    """Around the transaction that inserts a request: losing the race for its Idempotency-Key
    to a concurrent request (for another model, so another body: one model's requests queue on
    its row lock and find the earlier one) is an IdempotencyConflictError, not an
    IntegrityError. Only the unique key on ``idempotency_key`` is translated."""
    try:
        yield
    except IntegrityError as exc:
        if "idempotency_key" not in str(exc.orig):
            raise
        raise IdempotencyConflictError(KEY_REUSED) from exc


class DeletionRepository(Repository):
    def by_key(
        self, tenant_id: uuid.UUID, idempotency_key: str, body: str, hasher: TenantHasher
    ) -> DeletionRequest | None:
        """The earlier request sent with this Idempotency-Key; the same key with another body
        (``body``: the request's canonical form, kept as a keyed hash under the tenant's
        ``hasher``) is an IdempotencyConflictError."""
        earlier = self.session.scalar(
            sa.select(DeletionRequest).where(
                DeletionRequest.tenant_id == tenant_id,
                DeletionRequest.idempotency_key == idempotency_key,
            )
        )
        if earlier is not None and earlier.body_hash != hasher.under(
            earlier.hash_scheme, body, earlier.secret_version
        ):
            raise IdempotencyConflictError(KEY_REUSED)
        return earlier

    def new(
        self,
        *,
        tenant_id: uuid.UUID,
        model_id: uuid.UUID,
        body: str,
        hasher: TenantHasher,
        received_at: datetime | None = None,
        idempotency_key: str | None = None,
        subject_id: str | None = None,
    ) -> DeletionRequest:
        """A new request, inserted with its items (:meth:`add_items`), which also fixes its
        counts: one INSERT each. Callers look up ``idempotency_key`` first (:meth:`by_key`)
        with the model row locked. The body and the subject are kept as keyed hashes under the
        tenant's ``hasher`` (both name personal data)."""
        request = DeletionRequest(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            model_id=model_id,
            idempotency_key=idempotency_key,
            body_hash=hasher(body),
            subject_hash=hasher(subject_id) if subject_id is not None else None,
            hash_scheme=hasher.scheme,
            secret_version=hasher.version,
            status=DeletionStatus.received,
            received_at=received_at or utcnow(),
            n_requested=0,
            n_deleted=0,
            n_already_deleted=0,
            n_unknown=0,
            partial=False,
        )
        self.session.add(request)
        return request

    def subject_deleted_before(
        self, model_id: uuid.UUID, subject_id: str, hasher: TenantHasher
    ) -> bool:
        """Whether an earlier request deleted samples of this subject from the model (its hash
        under any scheme and secret version)."""
        hashes = {hasher.under(HashScheme.sha256, subject_id), *hasher.every(subject_id)}
        query = sa.select(DeletionRequest.id).where(
            DeletionRequest.model_id == model_id,
            DeletionRequest.subject_hash.in_(hashes),
            DeletionRequest.n_deleted > 0,
        )
        return self.session.scalar(query.limit(1)) is not None

    def get(self, request_id: uuid.UUID, *, tenant_id: uuid.UUID | None = None) -> DeletionRequest:
        request = self.session.get(DeletionRequest, request_id)
        if request is None or (tenant_id is not None and request.tenant_id != tenant_id):
            raise DeletionNotFoundError(f"no deletion request {request_id}")
        return request

    def deleted_sample_ids(self, request_id: uuid.UUID) -> list[int]:
        """The samples this request deleted (not those deleted before it), by id."""
        return list(
            self.session.scalars(
                sa.select(DeletionItem.sample_id)
                .where(
                    DeletionItem.request_id == request_id,
                    DeletionItem.outcome == ItemOutcome.deleted,
                    DeletionItem.sample_id.is_not(None),
                )
                .order_by(DeletionItem.sample_id)
            )
        )

    def overdue_purges(self, now: datetime, *, limit: int = 100) -> list[DeletionRequest]:
        """Requests whose payloads waited for an approximate pass past their deadline."""
        return list(
            self.session.scalars(
                sa.select(DeletionRequest)
                .where(
                    DeletionRequest.payloads_purge_by <= now,
                    DeletionRequest.payloads_purged_at.is_(None),
                )
                .order_by(DeletionRequest.payloads_purge_by)
                .limit(limit)
            )
        )

    def add_items(
        self,
        request: DeletionRequest,
        items: Sequence[tuple[str, int | None, ItemOutcome]],
        hasher: TenantHasher,
    ) -> None:
        """Record (external id, sample id, outcome) per requested id, inserted in one batch
        after the request (flushed here); only hashes are kept, except for unknown ids, which
        the request reports back to the caller."""
        counts = dict.fromkeys(ItemOutcome, 0)
        rows = []
        for external_id, sample_id, outcome in items:
            counts[outcome] += 1
            rows.append(
                DeletionItem(
                    request_id=request.id,
                    sample_id=sample_id,
                    external_id_hash=hasher(external_id),
                    unknown_external_id=external_id if outcome is ItemOutcome.unknown else None,
                    outcome=outcome,
                )
            )
        request.n_requested += len(items)
        request.n_deleted += counts[ItemOutcome.deleted]
        request.n_already_deleted += counts[ItemOutcome.already_deleted]
        request.n_unknown += counts[ItemOutcome.unknown]
        request.partial = request.partial or request.n_unknown > 0
        self.session.flush()  # the request first: nothing tells the flush that items need it
        self.session.add_all(rows)

    def includes(self, request: DeletionRequest, external_id_hash: str) -> bool:
        """Whether one of the request's items has this hash (of the request's scheme)."""
        query = sa.select(DeletionItem.id).where(
            DeletionItem.request_id == request.id,
            DeletionItem.external_id_hash == external_id_hash,
        )
        return self.session.scalar(query.limit(1)) is not None

    def items(self, request_id: uuid.UUID) -> list[DeletionItem]:
        return list(
            self.session.scalars(
                sa.select(DeletionItem)
                .where(DeletionItem.request_id == request_id)
                .order_by(DeletionItem.id)
            )
        )

    def advance(
        self, request: DeletionRequest, status: DeletionStatus, *, reason: str | None = None
    ) -> None:
        """Move along the lifecycle, stamping the phase; an illegal move is a LineageError."""
        if status not in _NEXT[request.status]:
            raise LineageError(
                f"a deletion cannot go from {request.status.value} to {status.value}"
            )
        if status is S.failed and not reason:
            raise ValueError("a failed deletion needs a reason")
        request.status = status
        request.failure_reason = reason if status is S.failed else None
        setattr(request, _TIMESTAMP[status], utcnow())

    def unknown_ids_many(self, request_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
        """The ids each request named that matched no sample, in request order."""
        rows = self.session.execute(
            sa.select(DeletionItem.request_id, DeletionItem.unknown_external_id)
            .where(
                DeletionItem.request_id.in_(list(request_ids)),
                DeletionItem.unknown_external_id.is_not(None),
            )
            .order_by(DeletionItem.id)
        )
        unknown: dict[uuid.UUID, list[str]] = {}
        for request_id, external_id in rows:
            unknown.setdefault(request_id, []).append(external_id or "")
        return unknown

    def link_job(self, request: DeletionRequest, job_id: uuid.UUID) -> None:
        """The request waits for this job (idempotent)."""
        if self.session.get(DeletionJob, (request.id, job_id)) is None:
            self.session.add(DeletionJob(request_id=request.id, job_id=job_id))
            self.session.flush()

    def unlink_failed_jobs(self, request: DeletionRequest) -> None:
        """Forget the failed jobs a request waited for (a retry replaces them)."""
        failed = sa.select(Job.id).where(Job.status == JobStatus.failed)
        self.session.execute(
            sa.delete(DeletionJob).where(
                DeletionJob.request_id == request.id, DeletionJob.job_id.in_(failed)
            )
        )

    def link_new_jobs(self, request: DeletionRequest, job_ids: set[uuid.UUID]) -> None:
        """Links of a request that has none yet (inserted in one batch at the next flush, after
        the jobs, which the flush here inserts)."""
        self.session.flush()
        self.session.add_all(DeletionJob(request_id=request.id, job_id=j) for j in job_ids)

    def jobs_of(self, request_id: uuid.UUID) -> list[Job]:
        return self.jobs_of_many([request_id]).get(request_id, [])

    def jobs_of_many(self, request_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Job]]:
        """The jobs each request waits for, oldest first."""
        rows = self.session.execute(
            sa.select(DeletionJob.request_id, Job)
            .join(Job, DeletionJob.job_id == Job.id)
            .where(DeletionJob.request_id.in_(list(request_ids)))
            .order_by(Job.created_at, Job.id)
        )
        jobs: dict[uuid.UUID, list[Job]] = {}
        for request_id, job in rows:
            jobs.setdefault(request_id, []).append(job)
        return jobs

    def waiting_on(self, job_id: uuid.UUID) -> list[DeletionRequest]:
        """The requests linked to a job, oldest first."""
        return list(
            self.session.scalars(
                sa.select(DeletionRequest)
                .join(DeletionJob, DeletionJob.request_id == DeletionRequest.id)
                .where(DeletionJob.job_id == job_id)
                .order_by(DeletionRequest.received_at, DeletionRequest.id)
            )
        )

    def list(
        self,
        tenant_id: uuid.UUID,
        *,
        limit: int,
        model_id: uuid.UUID | None = None,
        status: DeletionStatus | None = None,
        before: tuple[datetime, uuid.UUID] | None = None,
    ) -> list[DeletionRequest]:
        """A tenant's requests, newest first; ``before`` is the (received_at, id) of the last
        request of the previous page."""
        query = sa.select(DeletionRequest).where(DeletionRequest.tenant_id == tenant_id)
        if model_id is not None:
            query = query.where(DeletionRequest.model_id == model_id)
        if status is not None:
            query = query.where(DeletionRequest.status == status)
        if before is not None:
            at, request_id = before
            query = query.where(
                sa.or_(
                    DeletionRequest.received_at < at,
                    sa.and_(DeletionRequest.received_at == at, DeletionRequest.id < request_id),
                )
            )
        query = query.order_by(DeletionRequest.received_at.desc(), DeletionRequest.id.desc())
        return list(self.session.scalars(query.limit(limit)))
