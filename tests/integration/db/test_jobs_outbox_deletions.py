"""Jobs (de-duplicated while live), the outbox, and deletion requests (idempotent, lifecycle)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from service.db.hashing import keyed_hash, plain_hash
from service.db.models import (
    DeletionStatus,
    ItemOutcome,
    JobKind,
    JobStatus,
    Model,
    Tenant,
)
from service.db.repositories import (
    DeletionRepository,
    JobRepository,
    OutboxRepository,
    TenantRepository,
)
from service.errors import IdempotencyConflictError, JobNotFoundError, LineageError


class TestJobs:
    def test_live_job_is_deduplicated_until_it_finishes(
        self, session: Session, model: Model
    ) -> None:
        repo = JobRepository.from_session(session)
        key = f"{model.id}:0:0:2:v1"
        job, created = repo.create(
            model_id=model.id, kind=JobKind.retrain, stages_total=2, dedup_key=key
        )
        again, created_again = repo.create(
            model_id=model.id, kind=JobKind.retrain, stages_total=2, dedup_key=key
        )
        assert created and not created_again and again.id == job.id
        repo.start(job)
        repo.progress(job, 5)
        assert job.status is JobStatus.running and job.stages_done == 2
        repo.finish(job, JobStatus.succeeded)
        with pytest.raises(LineageError):
            repo.start(job)
        fresh, created = repo.create(
            model_id=model.id, kind=JobKind.retrain, stages_total=2, dedup_key=key
        )
        assert created and fresh.id != job.id

    def test_other_tenant_sees_no_job(self, session: Session, model: Model, tenant: Tenant) -> None:
        repo = JobRepository.from_session(session)
        job, _ = repo.create(model_id=model.id, kind=JobKind.train, stages_total=9)
        assert repo.get(job.id, tenant_id=tenant.id) is job
        with pytest.raises(JobNotFoundError):
            repo.get(job.id, tenant_id=uuid.uuid4())


class TestOutbox:
    def test_due_sent_and_retried(self, session: Session) -> None:
        repo = OutboxRepository.from_session(session)
        first = repo.add("workers.retrain", "training", {"job_id": "j1"})
        second = repo.add("workers.retrain", "training", {"job_id": "j2"})
        assert [m.id for m in repo.due()] == [first.id, second.id]
        repo.mark_sent(first)
        repo.mark_failed(second, "broker down", retry_in=timedelta(minutes=5))
        session.flush()
        assert repo.due() == []
        assert repo.pending_count() == 1
        later = second.available_at + timedelta(seconds=1)
        assert [m.id for m in repo.due(now=later)] == [second.id]


class TestDeletionRequests:
    def test_idempotency_key(self, session: Session, model: Model, tenant: Tenant) -> None:
        repo = DeletionRepository.from_session(session)
        hasher = TenantRepository.from_session(session).hasher(tenant.id)

        assert repo.by_key(tenant.id, "k1", "a", hasher) is None
        request = repo.new(
            tenant_id=tenant.id, model_id=model.id, idempotency_key="k1", body="a", hasher=hasher
        )
        session.flush()
        same = repo.by_key(tenant.id, "k1", "a", hasher)
        assert same is not None and same.id == request.id
        assert request.body_hash == hasher("a") != plain_hash("a")
        with pytest.raises(IdempotencyConflictError):
            repo.by_key(tenant.id, "k1", "b", hasher)

    def test_items_keep_hashes_not_ids(
        self, session: Session, model: Model, tenant: Tenant
    ) -> None:
        repo = DeletionRepository.from_session(session)
        hasher = TenantRepository.from_session(session).hasher(tenant.id)
        request = repo.new(
            tenant_id=tenant.id,
            model_id=model.id,
            body="a",
            hasher=hasher,
            subject_id="alice@example.com",
        )
        repo.add_items(
            request,
            [("alice-1", None, ItemOutcome.deleted), ("ghost", None, ItemOutcome.unknown)],
            hasher,
        )
        items = repo.items(request.id)
        assert [i.unknown_external_id for i in items] == [None, "ghost"]
        assert [i.external_id_hash for i in items] == [
            keyed_hash(hasher.secret, "alice-1"),
            keyed_hash(hasher.secret, "ghost"),
        ]
        assert plain_hash("alice-1") not in {i.external_id_hash for i in items}
        assert request.hash_scheme == "hmac-sha256"
        assert request.partial and (request.n_requested, request.n_deleted, request.n_unknown) == (
            2,
            1,
            1,
        )
        assert request.subject_hash == keyed_hash(hasher.secret, "alice@example.com")

    def test_lifecycle(self, session: Session, model: Model, tenant: Tenant) -> None:
        repo = DeletionRepository.from_session(session)
        hasher = TenantRepository.from_session(session).hasher(tenant.id)
        request = repo.new(tenant_id=tenant.id, model_id=model.id, body="a", hasher=hasher)
        with pytest.raises(LineageError):
            repo.advance(request, DeletionStatus.completed)
        repo.advance(request, DeletionStatus.deactivated)
        repo.advance(request, DeletionStatus.retraining)
        repo.advance(request, DeletionStatus.failed, reason="worker lost")
        assert request.failure_reason == "worker lost" and request.failed_at is not None
        repo.advance(request, DeletionStatus.retraining)  # the retry path
        repo.advance(request, DeletionStatus.completed)
        assert request.failure_reason is None
        assert request.deactivated_at is not None and request.retraining_at is not None
        assert request.completed_at is not None
        assert request.deactivated_at <= request.retraining_at <= request.completed_at
        with pytest.raises(LineageError):
            repo.advance(request, DeletionStatus.retraining)
        other_tenant = uuid.uuid4()
        from service.errors import DeletionNotFoundError

        with pytest.raises(DeletionNotFoundError):
            repo.get(request.id, tenant_id=other_tenant)
