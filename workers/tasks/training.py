"""Training-queue tasks: thin wrappers that run a job by id in this worker's engine."""

from __future__ import annotations

import uuid

from celery import current_app, shared_task

from service.exactness.runner import run_exactness_audit
from service.quality.runner import run_measurement
from service.queues import TaskName
from service.relay import celery_publisher, relay_once
from service.training.runner import run_sequence_job
from workers import runtime


@shared_task(name=TaskName.train_sequence.value)
def train_sequence(job_id: str) -> None:
    """Train (or retrain from a stage) one slice sequence, as recorded in the job; then send
    the follow-ups it queued, announce the model's new layers and collect the dead ones'
    artifacts."""
    outcome = run_sequence_job(runtime.transaction, runtime.engines(), uuid.UUID(job_id))
    relay_once(runtime.session_factory(), celery_publisher(current_app))
    runtime.announce(outcome)
    runtime.collect_artifacts()


@shared_task(name=TaskName.audit_exactness.value)
def audit_exactness(job_id: str) -> None:
    """Retrain the audited shards into a scratch store and record the comparison."""
    run_exactness_audit(runtime.transaction, runtime.engines(), uuid.UUID(job_id))


@shared_task(name=TaskName.measure_quality.value)
def measure_quality(job_id: str) -> None:
    """Score what the model serves on its evaluation split; grade the passes it supersedes."""
    run_measurement(runtime.transaction, runtime.engines(), uuid.UUID(job_id))
