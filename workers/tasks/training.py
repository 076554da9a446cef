"""Training tasks: thin wrappers that run a job by id in this worker's engine."""

from __future__ import annotations

import uuid

from celery import shared_task

from service.training.jobs import run_sequence_job
from workers import runtime
from workers.queues import TaskName


@shared_task(name=TaskName.train_sequence.value)
def train_sequence(job_id: str) -> None:
    """Train (or retrain from a stage) one slice sequence, as recorded in the job's params."""
    run_sequence_job(runtime.transaction, runtime.s3t_engine(), uuid.UUID(job_id))
