"""Running one sequence job: the body of the training task, with its transaction boundaries.

A job's params are ``{"sequence_id": ..., "from_stage": k}``. The job is marked running and its
data read in one transaction, trained outside any transaction, then its layers recorded and
activated together with the job's outcome in another. A failure is recorded on the job
(``failed`` with the error) before it propagates, so Celery's retry policy still applies.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager

from sqlalchemy.orm import Session

from service.db.models import JobStatus
from service.db.repositories import JobRepository
from service.db.repositories.jobs import LIVE_STATUSES
from service.db.repositories.lineage import Activation
from service.training.service import read_sequence_job, record_sequence
from unlearning.s3t import S3TEngine

Transaction = Callable[[], AbstractContextManager[Session]]


def sequence_job_params(sequence_id: uuid.UUID, from_stage: int) -> dict[str, object]:
    return {"sequence_id": str(sequence_id), "from_stage": from_stage}


def run_sequence_job(
    transaction: Transaction, engine: S3TEngine, job_id: uuid.UUID
) -> Activation | None:
    """Train the job's stages and serve those still valid; returns what was activated, or None
    when the job had already finished (a redelivered message changes nothing)."""
    try:
        with transaction() as session:
            jobs = JobRepository.from_session(session)
            job = jobs.get(job_id)
            if job.status not in LIVE_STATUSES:
                return None
            jobs.start(job)
            from_stage = int(job.params["from_stage"])
            work = read_sequence_job(session, uuid.UUID(job.params["sequence_id"]), from_stage)
            job.stages_total = work.spec.config.n_slices - from_stage + 1
        trained = engine.retrain(work.spec, work.key, from_stage, work.samples, work.prefix)
        with transaction() as session:
            activation = record_sequence(session, work, trained, job_id)
            jobs = JobRepository.from_session(session)
            job = jobs.get(job_id)
            jobs.progress(job, len(trained))
            jobs.finish(job, JobStatus.succeeded)
    except Exception as error:
        with transaction() as session:
            jobs = JobRepository.from_session(session)
            job = jobs.get(job_id)
            if job.status in LIVE_STATUSES:
                jobs.finish(job, JobStatus.failed, f"{type(error).__name__}: {error}")
        raise
    return activation
