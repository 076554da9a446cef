"""``/jobs/{id}``: progress of a training or retraining job."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from service.api.auth import CurrentKey
from service.api.deps import SessionDep
from service.api.problems import problem_responses
from service.jobs.schemas import JobPublic
from service.jobs.service import job_public

router = APIRouter(prefix="/jobs", tags=["jobs"])
PROBLEMS = problem_responses(401, 404, 422)


@router.get("/{job_id}", responses=PROBLEMS)
def read_job(job_id: uuid.UUID, key: CurrentKey, session: SessionDep) -> JobPublic:
    """Stages done out of total, and an ETA while it runs."""
    return job_public(session, key.tenant_id, job_id)
