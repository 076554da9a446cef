"""Job progress as the API reports it; a model-wide job sums its per-sequence jobs."""

from __future__ import annotations

import uuid
from collections import Counter

from sqlalchemy.orm import Session

from service.db.models import Job, JobStatus
from service.db.models.base import utcnow
from service.db.repositories import JobRepository, ModelRepository, WorkerRepository
from service.jobs.schemas import JobPublic


def job_public(session: Session, tenant_id: uuid.UUID, job_id: uuid.UUID) -> JobPublic:
    """The tenant's job (another tenant's is not found)."""
    job = JobRepository.from_session(session).get(job_id, tenant_id=tenant_id)
    return describe(session, job)


def no_worker_reason(profile: str, live_workers: int) -> str | None:
    """What a queued job of ``profile`` waits for, when no live worker can take it."""
    if live_workers:
        return None
    return (
        f"no live worker of compute profile {profile}: start one on such a machine "
        "(`unlearn worker`; `unlearn profile` prints a machine's profile)"
    )


def stage_work(jobs: list[Job]) -> tuple[float, float]:
    """(Work done, work in all) of jobs that train sequences, in slice-trainings: S3T's stage i
    trains on the first i slices, so later stages cost more and the pace of the first stages
    alone would promise too early an end. Other jobs (a pass's sequences) weigh one each."""
    done = total = 0.0
    for job in jobs:
        first = job.from_stage if job.sequence_id is not None and job.from_stage else None
        if first is None:
            done, total = done + job.stages_done, total + job.stages_total
            continue
        done += sum(range(first, first + job.stages_done))
        total += sum(range(first, first + job.stages_total))
    return done, total


def describe(session: Session, job: Job, live: Counter[str] | None = None) -> JobPublic:
    """A job already read, with the progress of its children (a model-wide training's);
    ``live``: live workers per compute profile, when the caller describes many jobs."""
    children = JobRepository.from_session(session).children(job.id)
    profile = ModelRepository.from_session(session).get(job.model_id).compute_profile
    waiting = None
    if job.status in (JobStatus.queued, JobStatus.running):
        if live is None:
            live = WorkerRepository.from_session(session).live_by_profile()
        waiting = no_worker_reason(profile, live[profile])
    done = sum(c.stages_done for c in children) if children else job.stages_done
    total = max(job.stages_total, 1)
    eta = None
    if job.status is JobStatus.running and job.started_at is not None and 0 < done < total:
        elapsed = (utcnow() - job.started_at).total_seconds()
        work_done, work_total = stage_work(children or [job])
        eta = elapsed / work_done * (work_total - work_done)
    return JobPublic(
        id=job.id,
        model_id=job.model_id,
        kind=job.kind.value,
        status=job.status.value,
        sequence_id=job.sequence_id,
        from_stage=job.from_stage,
        stages_done=done,
        stages_total=job.stages_total,
        progress=min(done / total, 1.0),
        eta_s=eta,
        attempts=job.attempts,
        error=job.error,
        children=len(children),
        compute_profile=profile,
        parked=job.deferred_reason,
        parked_until=job.deferred_until,
        waiting_for_worker=waiting,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )
