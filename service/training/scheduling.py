"""Which jobs a lineage change needs, and when they reach the workers.

- :func:`start_training` queues one job per slice sequence under a model-wide parent job.
- :func:`ensure_retrain` brings an invalidated sequence back: it coalesces into the sequence's
  queued job (lowering its first stage) or queues a new one, de-duplicated on (sequence, first
  stage, slice versions).
- :func:`retrain_after_deletion` is S3T-aware: in each touched shard the order the shard now
  serves best is retrained first (its retrain is what the deletion waits for); the shard's other
  invalidated orders are parked while the shard serves at full depth, absorbing later deletions,
  and follow at low priority once the shard has been quiet for a while (:func:`release_due`) or
  as soon as the shard needs one of them. A retrain's message waits a short window, so that
  deletions arriving meanwhile join it. A deletion with an approximate pass holds its new
  retrains until the pass ends (:func:`hold_for_pass`, :func:`release_held`), so the pass
  serves first.

What a finished job settles is its runner's (``service.training.runner.settle``); how its
deletions move on is settlement's (``service.jobs.settlement``).

Jobs reach the workers through the transactional outbox: a message is written here, in the
transaction that justifies it, and the relay sends it after commit. Nothing here commits.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from service.db.models import (
    DeletionRequest,
    Job,
    JobKind,
    JobStatus,
    Model,
    ModelStatus,
    SliceSequence,
)
from service.db.models.base import utcnow
from service.db.repositories import (
    AuditRepository,
    DeletionRepository,
    JobRepository,
    LineageRepository,
    ModelRepository,
    OutboxRepository,
)
from service.db.repositories.audit import audit_chain
from service.db.repositories.lineage import Prefix, choose_served
from service.errors import ConflictError
from service.queues import Priority, Queue, TaskName, queue_for
from service.settings import RetrainScheduling, Settings


@dataclass(frozen=True)
class RetrainPolicy:
    """How retrains follow deletions (UNLEARN_RETRAIN_WINDOW_S, _SCHEDULING, _RESTORE_AFTER_S).

    ``window_s``: a retrain's message waits this long, so deletions arriving meanwhile join it.
    ``served_first``: retrain first the order each touched shard now serves best and park its
    other orders while it serves at full depth; False retrains every invalidated order at once.
    ``restore_after_s``: a parked order is retrained after this long without a deletion on it.
    """

    window_s: float = 0.0
    served_first: bool = True
    restore_after_s: float = 600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetrainPolicy:
        """The policy of ``UNLEARN_RETRAIN_*`` (the settings hold values; the policy is ours)."""
        return cls(
            window_s=settings.retrain_window_s,
            served_first=settings.retrain_scheduling is RetrainScheduling.served_first,
            restore_after_s=settings.retrain_restore_after_s,
        )


#: The task and queue of each kind of job.
ROUTES = {
    JobKind.train: (TaskName.train_sequence, Queue.training),
    JobKind.retrain: (TaskName.train_sequence, Queue.training),
    JobKind.approximate: (TaskName.approximate_deletion, Queue.deletions),
    JobKind.exactness_audit: (TaskName.audit_exactness, Queue.training),
    JobKind.measure_quality: (TaskName.measure_quality, Queue.training),
}


def enqueue(
    session: Session, job: Job, *, priority: Priority = Priority.normal, delay_s: float = 0.0
) -> None:
    """Write the job's message to the outbox (ids only); the relay sends it after commit.
    Approximate passes go to the short `deletions` queue, (re)training, exactness audits and
    measurements of quality to `training`, each the queue of the model's compute profile, so
    that only workers of that profile run them (an audit's bitwise comparison needs the profile
    that trained the model). ``delay_s`` holds the message back (deletions arriving meanwhile
    join the job)."""
    task, queue = ROUTES[job.kind]
    profile = ModelRepository.from_session(session).get(job.model_id).compute_profile
    OutboxRepository.from_session(session).add(
        task.value,
        queue_for(queue, profile),
        {"job_id": str(job.id)},
        priority=int(priority),
        delay=timedelta(seconds=delay_s) if delay_s > 0 else None,
    )


@dataclass(frozen=True)
class Parking:
    """Why a retrain waits without a message, and until when at the latest."""

    reason: str
    until: datetime


def park(job: Job, parking: Parking) -> None:
    job.deferred_reason, job.deferred_until = parking.reason, parking.until


def release(
    session: Session, job: Job, *, priority: Priority = Priority.normal, delay_s: float = 0.0
) -> None:
    """Send a parked job to the workers."""
    job.deferred_reason = job.deferred_until = None
    job.heartbeat_at = utcnow()  # its lease starts now
    enqueue(session, job, priority=priority, delay_s=delay_s)


#: The reason of retrains held while their deletion's approximate pass runs first.
AWAITING_APPROXIMATION = "waiting for the deletion's approximate pass, which runs first"


def hold_for_pass(head_start_s: float) -> Parking:
    """A deletion's retrains wait for its pass (released when the pass ends), at most this long
    (a pass whose worker is gone must not hold the exact path)."""
    return Parking(
        reason=f"{AWAITING_APPROXIMATION} (at most {head_start_s:.0f} s)",
        until=utcnow() + timedelta(seconds=head_start_s),
    )


def _held(job: Job) -> bool:
    return (job.deferred_reason or "").startswith(AWAITING_APPROXIMATION)


def release_held(session: Session, request_id: uuid.UUID) -> int:
    """Send the retrains held for the request's pass (the pass ended); returns how many."""
    held = [
        job
        for job in DeletionRepository.from_session(session).jobs_of(request_id)
        if job.status is JobStatus.queued and _held(job)
    ]
    for job in held:
        release(session, job)
    return len(held)


def release_due(
    session: Session, *, now: datetime | None = None, model_id: uuid.UUID | None = None
) -> int:
    """Send the parked retrains whose time has come (of one model, or all): parked orders at
    low priority, retrains held for a pass at normal; returns how many. Housekeeping calls it,
    and every finished job for its model."""
    due = JobRepository.from_session(session).parked_until(now or utcnow(), model_id=model_id)
    for job in due:
        release(session, job, priority=Priority.normal if _held(job) else Priority.low)
    return len(due)


def start_training(session: Session, model: Model, *, actor: str) -> Job:
    """Queue the training of every sequence from stage 1; returns the model-wide parent job."""
    if model.status is ModelStatus.training:
        raise ConflictError(f"model {model.id} is already training")
    models = ModelRepository.from_session(session)
    if not models.has_live_samples(model.id):
        raise ConflictError("register samples before training the model")
    sequences = models.sequences(model.id)
    jobs = JobRepository.from_session(session)
    parent, _ = jobs.create(
        model_id=model.id, kind=JobKind.train, stages_total=len(sequences) * model.n_slices
    )
    for sequence in sequences:
        child, _ = jobs.create(
            model_id=model.id,
            kind=JobKind.train,
            stages_total=model.n_slices,
            parent_id=parent.id,
            sequence_id=sequence.id,
            from_stage=1,
        )
        enqueue(session, child)
    model.status = ModelStatus.training
    AuditRepository.from_session(session).append(
        audit_chain(model.id),
        actor=actor,
        action="training.requested",
        payload={"job_id": str(parent.id), "sequences": len(sequences)},
    )
    return parent


def _versions_digest(session: Session, shard_id: uuid.UUID) -> str:
    """A digest of the shard's slice versions: part of a retrain's de-duplication key."""
    return versions_digest(LineageRepository.from_session(session).shard_versions(shard_id))


def versions_digest(versions: dict[uuid.UUID, int]) -> str:
    canonical = json.dumps(sorted((str(k), v) for k, v in versions.items()))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def ensure_retrain(
    session: Session,
    model: Model,
    sequence: SliceSequence,
    valid: int,
    versions: str | None = None,
    live: list[Job] | None = None,
    *,
    priority: Priority = Priority.normal,
    delay_s: float = 0.0,
    parking: Parking | None = None,
) -> Job:
    """The job that will retrain the sequence from stage ``valid + 1`` on current data.

    A queued job of the sequence absorbs the request (it reads the data when it starts, so it
    sees this change too); otherwise a new job is queued, de-duplicated on (sequence, slice
    versions); ``versions`` (the shard's digest) and ``live`` (the sequence's live jobs, locked)
    save queries when the caller has them. With ``parking`` the job waits without a message (a
    parked job absorbing this request stays parked, until the later time); without, a parked
    job is sent. Call with the model row locked.
    """
    from_stage = valid + 1
    key = f"retrain:{sequence.id}:{versions or _versions_digest(session, sequence.shard_id)}"
    jobs = JobRepository.from_session(session)
    for job in jobs.live_for_sequence(sequence.id) if live is None else live:
        if job.status is JobStatus.queued:
            job.from_stage = min(job.from_stage or from_stage, from_stage)
            job.stages_total = model.n_slices - job.from_stage + 1
            if job.dedup_key is not None:
                job.dedup_key = key
            if job.deferred_until is not None:
                if parking is None:
                    release(session, job, priority=priority, delay_s=delay_s)
                else:
                    park(job, parking)
            return job
    # The sequence's live jobs read under the model lock (``live``) stand for the look-up.
    job, created = jobs.create(
        model_id=model.id,
        kind=JobKind.retrain,
        stages_total=model.n_slices - from_stage + 1,
        sequence_id=sequence.id,
        from_stage=from_stage,
        dedup_key=key,
        look_up=live is None,
    )
    if created:
        if parking is None:
            enqueue(session, job, priority=priority, delay_s=delay_s)
        else:
            park(job, parking)
    return job


def retrain_after_deletion(
    session: Session,
    model: Model,
    request: DeletionRequest,
    shards: set[uuid.UUID],
    invalidated: set[uuid.UUID],
    policy: RetrainPolicy | None = None,
    *,
    hold: Parking | None = None,
    prefixes: Sequence[Prefix],
) -> list[Job]:
    """Queue (or join) the retrains of the sequences of the touched ``shards`` that the
    deletion changed: those whose active layers it invalidated, and those with a job in flight
    (its result will be stale). Returns the jobs the deletion waits for. With ``hold`` (the
    deletion has an approximate pass) its new retrains wait, parked, for the pass to end.

    Under ``policy.served_first`` (the default) the deletion waits, in each touched shard, for
    the retrain of the order the shard now serves best (none when it still serves at full
    depth); the shard's other orders are parked (see the module's docstring). ``prefixes``:
    the touched shards' valid prefixes after the deletion (the caller read them)."""
    policy = policy or RetrainPolicy()
    jobs = JobRepository.from_session(session)
    lineage = LineageRepository.from_session(session)
    by_sequence = {p.sequence_id: p for p in prefixes}
    served = choose_served(prefixes, model.n_shards)
    digests = {
        shard_id: versions_digest(versions)
        for shard_id, versions in lineage.shards_versions(shards).items()
    }
    sequences = ModelRepository.from_session(session).shard_sequences(shards)
    live = jobs.live_for_sequences([s.id for s in sequences])
    linked: dict[uuid.UUID, Job] = {}
    for shard_id in sorted(shards):
        mine = [s for s in sequences if s.shard_id == shard_id]
        needed = [s for s in mine if s.id in invalidated or s.id in live]
        if not needed:
            continue
        first = _first_to_retrain(mine, needed, by_sequence, served, model.n_slices)
        parking = _parking(mine, served, model, policy) if policy.served_first else None
        if first is not None and first not in needed:
            needed.insert(0, first)  # the best order was cut earlier and has no job
        for sequence in needed:
            primary = parking is None or sequence is first
            job = ensure_retrain(
                session,
                model,
                sequence,
                by_sequence[sequence.id].exact,
                digests[shard_id],
                live.get(sequence.id, []),
                priority=Priority.normal if primary else Priority.low,
                delay_s=policy.window_s,
                parking=hold if primary else parking,
            )
            if primary:
                linked[job.id] = job
    DeletionRepository.from_session(session).link_new_jobs(request, set(linked))
    return list(linked.values())


def _first_to_retrain(
    mine: list[SliceSequence],
    needed: list[SliceSequence],
    prefixes: dict[uuid.UUID, Prefix],
    served: dict[int, Prefix | None],
    n_slices: int,
) -> SliceSequence | None:
    """The order a shard needs back first: the one it now serves (its longest valid prefix,
    so the fewest stages to retrain), unless that one is whole; with no valid layer left in the
    shard, the first order that needs a retrain."""
    shard_index = prefixes[mine[0].id].shard_index
    best = served.get(shard_index)
    if best is None:
        return needed[0]
    if best.length == n_slices:
        return None  # still served at full depth: nothing is urgent
    return next(s for s in mine if s.id == best.sequence_id)


def _parking(
    mine: list[SliceSequence], served: dict[int, Prefix | None], model: Model, policy: RetrainPolicy
) -> Parking:
    """Why a shard's other orders wait, and until when at the latest."""
    ids = {s.id for s in mine}
    best = next((p for p in served.values() if p is not None and p.sequence_id in ids), None)
    if best is not None and best.length == model.n_slices:
        why = f"shard {best.shard_index} serves at full depth from sequence {best.sequence_index}"
    else:
        why = "its shard retrains the order it serves first"
    return Parking(
        reason=f"{why}; this order follows after {policy.restore_after_s:.0f} s without a "
        "deletion on the shard, or as soon as the shard needs it",
        until=utcnow() + timedelta(seconds=policy.restore_after_s),
    )
