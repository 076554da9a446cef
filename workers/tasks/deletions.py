"""Deletion-queue tasks: short, high priority. The approximate pass of one deletion request."""

from __future__ import annotations

import uuid

from celery import shared_task

from service.approximation.runner import run_approximate_job
from service.queues import TaskName
from workers import runtime


@shared_task(name=TaskName.approximate_deletion.value)
def approximate_deletion(job_id: str) -> None:
    """Run a deletion's approximate pass, as recorded in the job; announce the layers served
    and collect the artifacts of those it replaced."""
    runtime.announce(run_approximate_job(runtime.transaction, runtime.engines(), uuid.UUID(job_id)))
    runtime.collect_artifacts()
