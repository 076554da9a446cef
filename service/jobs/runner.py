"""The skeleton every job runner shares: sequence (re)training (``service.training.runner``),
approximate passes (``service.approximation.runner``) and exactness audits
(``service.exactness.runner``). A runner reads::

    with failure_recorded(transaction, job_id, on_failure=...):
        with transaction() as session:
            job = claim_job(session, job_id)
            if job is None:
                return None  # a redelivered message
            work = ...  # read what the job needs
        ...  # compute outside any transaction, record in short ones (each with lock_job)

- :func:`claim_job`: a job's message can arrive more than once (a redelivery, or a stalled job
  sent again by ``service.training.recovery``); a job that already finished changes nothing.
- :func:`lock_job`: a transaction that changes a job and its model's lineage locks the model
  first, then the job: the order deletions lock them in, so the two never deadlock.
- :func:`failure_recorded`: a failure is recorded on the job before it propagates (so Celery's
  retry policy still applies): in a new transaction the job is locked again and, while it is
  still live, marked ``failed`` with the error; ``on_failure`` settles the rest there.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from sqlalchemy.orm import Session

from service.db.models import Job, JobStatus
from service.db.repositories import JobRepository, ModelRepository
from service.db.repositories.jobs import LIVE_STATUSES
from service.db.repositories.lineage import Activation

Transaction = Callable[[], AbstractContextManager[Session]]


@dataclass(frozen=True)
class JobOutcome:
    """What a job served: announced to the API processes (``workers.runtime.announce``)."""

    model_id: uuid.UUID
    activation: Activation
    serving_generation: int


def claim_job(session: Session, job_id: uuid.UUID) -> Job | None:
    """The job, its row locked and marked running; None when it already finished (a
    redelivered message, which changes nothing)."""
    jobs = JobRepository.from_session(session)
    job = jobs.get_for_update(job_id)
    if job.status not in LIVE_STATUSES:
        return None
    jobs.start(job)
    return job


def lock_job(session: Session, job_id: uuid.UUID) -> Job:
    """Lock the job's model, then the job: the order deletions lock them in (no deadlock)."""
    jobs = JobRepository.from_session(session)
    ModelRepository.from_session(session).get_for_update(jobs.get(job_id).model_id)
    return jobs.get_for_update(job_id)


@contextmanager
def failure_recorded(
    transaction: Transaction,
    job_id: uuid.UUID,
    *,
    lock_model: bool = True,
    on_failure: Callable[[Session, Job], None] | None = None,
) -> Iterator[None]:
    """Record an error raised in the block on the job (``failed``, with the error's type and
    message), then let it propagate. The job is locked with its model first (:func:`lock_job`)
    unless ``lock_model`` is False (a job that changes no lineage); ``on_failure`` runs in the
    same transaction, only when the job was still live."""
    try:
        yield
    except Exception as error:
        with transaction() as session:
            jobs = JobRepository.from_session(session)
            job = lock_job(session, job_id) if lock_model else jobs.get_for_update(job_id)
            if job.status in LIVE_STATUSES:
                jobs.finish(job, JobStatus.failed, f"{type(error).__name__}: {error}")
                if on_failure is not None:
                    on_failure(session, job)
        raise
