"""Jobs: creation with de-duplication among live jobs, progress and outcome."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from service.db.models import Job, JobKind, JobStatus, Model
from service.db.models.base import utcnow
from service.db.repositories.base import Repository
from service.errors import JobNotFoundError, LineageError

LIVE_STATUSES = (JobStatus.queued, JobStatus.running)
#: Jobs that occupy a worker: per-sequence (re)trains, approximate passes and exactness audits,
#: not the model-wide parent of a training, whose children do its work.
IS_WORK = sa.or_(
    Job.sequence_id.is_not(None), Job.kind.in_([JobKind.approximate, JobKind.exactness_audit])
)


class JobRepository(Repository):
    def create(
        self,
        *,
        model_id: uuid.UUID,
        kind: JobKind,
        stages_total: int,
        params: dict[str, Any] | None = None,
        dedup_key: str | None = None,
        parent_id: uuid.UUID | None = None,
        sequence_id: uuid.UUID | None = None,
        from_stage: int | None = None,
        look_up: bool = True,
    ) -> tuple[Job, bool]:
        """A new job, or the live job with the same ``dedup_key`` and False.

        ``dedup_key`` is unique among live jobs only: it is cleared when a job finishes. With
        ``look_up=False`` the job is new with no look-up and goes in one batch at the next
        flush: for callers that hold the model row and have read the sequence's live jobs, so
        that no live job can carry ``dedup_key`` (it names slice versions only they moved).
        """
        if look_up and dedup_key is not None:
            existing = self.session.scalar(sa.select(Job).where(Job.dedup_key == dedup_key))
            if existing is not None:
                return existing, False
        job = Job(
            id=uuid.uuid4(),
            model_id=model_id,
            kind=kind,
            status=JobStatus.queued,
            stages_total=stages_total,
            stages_done=0,
            attempts=0,
            params=dict(params or {}),
            dedup_key=dedup_key,
            parent_id=parent_id,
            sequence_id=sequence_id,
            from_stage=from_stage,
            created_at=utcnow(),
        )
        if not look_up:
            self.session.add(job)
            return job, True
        try:
            with self.session.begin_nested():
                self.session.add(job)
                self.session.flush()
        except IntegrityError:  # another transaction created it concurrently
            existing = self.session.scalar(sa.select(Job).where(Job.dedup_key == dedup_key))
            if existing is None:
                raise
            return existing, False
        return job, True

    def get(self, job_id: uuid.UUID, *, tenant_id: uuid.UUID | None = None) -> Job:
        """The job, or JobNotFoundError; another tenant's job is not found either."""
        query = sa.select(Job).where(Job.id == job_id)
        if tenant_id is not None:
            query = query.join(Model, Model.id == Job.model_id).where(Model.tenant_id == tenant_id)
        job = self.session.scalar(query)
        if job is None:
            raise JobNotFoundError(f"no job {job_id}")
        return job

    def recent(
        self, tenant_id: uuid.UUID, *, model_id: uuid.UUID | None = None, limit: int = 20
    ) -> list[Job]:
        """A tenant's live jobs, then the latest finished ones, up to ``limit`` (per-sequence
        and approximate jobs: the work itself, not the model-wide parent of a training)."""
        query = (
            sa.select(Job)
            .join(Model, Model.id == Job.model_id)
            .where(Model.tenant_id == tenant_id, IS_WORK)
        )
        if model_id is not None:
            query = query.where(Job.model_id == model_id)
        live_first = sa.case((Job.status.in_(LIVE_STATUSES), 0), else_=1)
        order = (live_first, Job.created_at.desc(), Job.id)
        return list(self.session.scalars(query.order_by(*order).limit(limit)))

    def latest_of_kind(self, model_id: uuid.UUID, kind: JobKind, *, limit: int) -> list[Job]:
        """A model's jobs of one kind, newest first."""
        query = sa.select(Job).where(Job.model_id == model_id, Job.kind == kind)
        return list(
            self.session.scalars(query.order_by(Job.created_at.desc(), Job.id).limit(limit))
        )

    def get_for_update(self, job_id: uuid.UUID) -> Job:
        """The job, its row locked until the transaction ends (start and coalescing race)."""
        job = self.session.scalar(
            sa.select(Job)
            .where(Job.id == job_id)
            .with_for_update(key_share=True)
            .execution_options(populate_existing=True)
        )
        if job is None:
            raise JobNotFoundError(f"no job {job_id}")
        return job

    def live_for_sequence(self, sequence_id: uuid.UUID, *, lock: bool = True) -> list[Job]:
        """Queued or running jobs of one sequence, oldest first (rows locked unless asked)."""
        return self.live_for_sequences([sequence_id], lock=lock).get(sequence_id, [])

    def live_for_sequences(
        self, sequence_ids: Sequence[uuid.UUID], *, lock: bool = True
    ) -> dict[uuid.UUID, list[Job]]:
        """Queued or running jobs per sequence, oldest first (rows locked unless asked)."""
        query = (
            sa.select(Job)
            .where(Job.sequence_id.in_(list(sequence_ids)), Job.status.in_(LIVE_STATUSES))
            .order_by(Job.created_at, Job.id)
        )
        if lock:
            query = query.with_for_update(key_share=True).execution_options(populate_existing=True)
        live: dict[uuid.UUID, list[Job]] = {}
        for job in self.session.scalars(query):
            assert job.sequence_id is not None
            live.setdefault(job.sequence_id, []).append(job)
        return live

    def expected_training_wait(self, *, default_job_s: float = 30.0, history: int = 20) -> float:
        """Seconds a new training job would wait: the live sequence jobs times the mean
        duration of the last ``history`` finished ones (``default_job_s`` with none)."""
        sequence_jobs = (Job.sequence_id.is_not(None), Job.kind != JobKind.approximate)
        live = self.session.scalar(
            sa.select(sa.func.count()).where(*sequence_jobs, Job.status.in_(LIVE_STATUSES))
        )
        finished = self.session.execute(
            sa.select(Job.started_at, Job.finished_at)
            .where(*sequence_jobs, Job.status == JobStatus.succeeded, Job.started_at.is_not(None))
            .order_by(Job.finished_at.desc())
            .limit(history)
        ).all()
        durations = [(end - start).total_seconds() for start, end in finished if start and end]
        per_job = sum(durations) / len(durations) if durations else default_job_s
        return float(live or 0) * per_job

    def children(self, parent_id: uuid.UUID) -> list[Job]:
        return list(
            self.session.scalars(sa.select(Job).where(Job.parent_id == parent_id).order_by(Job.id))
        )

    def start(self, job: Job) -> None:
        if job.status not in LIVE_STATUSES:
            raise LineageError(f"job {job.id} is {job.status.value}; it cannot start")
        job.status = JobStatus.running
        job.deferred_reason = job.deferred_until = None  # a parked job that runs is no longer
        job.attempts += 1
        job.started_at = job.started_at or utcnow()
        job.heartbeat_at = utcnow()

    def progress(self, job: Job, stages_done: int) -> None:
        job.stages_done = min(stages_done, job.stages_total)
        job.heartbeat_at = utcnow()

    def parked_until(
        self, now: datetime, *, model_id: uuid.UUID | None = None, limit: int = 100
    ) -> list[Job]:
        """Parked retrains whose time has come (of one model, or all), locked (others skipped
        on PostgreSQL)."""
        mine = (Job.model_id == model_id,) if model_id is not None else ()
        return list(
            self.session.scalars(
                sa.select(Job)
                .where(
                    Job.status == JobStatus.queued,
                    Job.deferred_until.is_not(None),
                    Job.deferred_until <= now,
                    *mine,
                )
                .order_by(Job.deferred_until)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )

    def stalled(self, silent_since: datetime, *, limit: int = 100) -> list[Job]:
        """Live jobs that occupy a worker (:data:`IS_WORK`) with no heartbeat since
        ``silent_since``, locked (others skipped on PostgreSQL, so two relays never resend one
        twice). Parked jobs have no message to lose and are not among them."""
        return list(
            self.session.scalars(
                sa.select(Job)
                .where(
                    Job.status.in_(LIVE_STATUSES),
                    Job.deferred_until.is_(None),
                    Job.heartbeat_at < silent_since,
                    IS_WORK,
                )
                .order_by(Job.heartbeat_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )

    def finish(self, job: Job, status: JobStatus, error: str | None = None) -> None:
        if status in LIVE_STATUSES:
            raise ValueError("finish() takes a final status")
        job.status = status
        job.error = error
        job.finished_at = utcnow()
        job.dedup_key = None
