"""Lost work is sent again: a live job silent past its lease gets a new outbox message."""

from __future__ import annotations

import uuid
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.models import Job, JobKind, JobStatus, Model, OutboxMessage
from service.db.models.base import utcnow
from service.db.repositories import JobRepository, ModelRepository
from service.training.recovery import resend_stalled

LEASE_S = 60.0


def _messages(session: Session, job: Job) -> int:
    payloads = session.scalars(sa.select(OutboxMessage.payload)).all()
    return sum(1 for p in payloads if p.get("job_id") == str(job.id))


def _job(session: Session, model: Model) -> Job:
    sequence = ModelRepository.from_session(session).sequences(model.id)[0]
    job, _ = JobRepository.from_session(session).create(
        model_id=model.id,
        kind=JobKind.retrain,
        stages_total=2,
        sequence_id=sequence.id,
        from_stage=1,
    )
    return job


def test_only_live_jobs_silent_past_the_lease_are_sent_again(
    session: Session, model: Model
) -> None:
    jobs = JobRepository.from_session(session)
    lost = _job(session, model)  # queued, its message lost with the broker
    killed = _job(session, model)  # running, its worker killed
    jobs.start(killed)
    fresh = _job(session, model)
    done = _job(session, model)
    jobs.finish(done, JobStatus.succeeded)
    parent, _ = jobs.create(model_id=model.id, kind=JobKind.train, stages_total=2)
    long_ago = utcnow() - timedelta(seconds=2 * LEASE_S)
    for job in (lost, killed, done, parent):
        job.heartbeat_at = long_ago
    session.flush()

    assert resend_stalled(session, LEASE_S) == 2
    assert [_messages(session, j) for j in (lost, killed, fresh, done, parent)] == [1, 1, 0, 0, 0]
    assert resend_stalled(session, LEASE_S) == 0  # the next resend waits a whole lease
    jobs.progress(killed, 1)  # a stage done is a heartbeat
    assert killed.heartbeat_at > long_ago


def test_an_approximate_job_is_sent_to_the_deletions_queue(session: Session, model: Model) -> None:
    job, _ = JobRepository.from_session(session).create(
        model_id=model.id,
        kind=JobKind.approximate,
        stages_total=1,
        params={"deletion_id": str(uuid.uuid4())},
    )
    job.heartbeat_at = utcnow() - timedelta(seconds=2 * LEASE_S)
    session.flush()
    assert resend_stalled(session, LEASE_S) == 1
    message = session.scalars(sa.select(OutboxMessage)).one()
    deletions = f"deletions@{model.compute_profile}"  # the pass queue of the model's profile
    assert (message.queue, message.task) == (deletions, "workers.approximate_deletion")
