"""Running one sequence job: the body of the training task, with its transaction boundaries.

1. Start (one transaction, job row locked): a job that already finished is a redelivered message
   and changes nothing; otherwise it is marked running, its first stage is lowered to the
   sequence's current valid prefix if a deletion cut that shorter, and its data is read (the
   prefix's layers are pinned in the job's params: artifact collection keeps them). The
   model row is not locked, so deletions never wait for this read: the slice versions are read
   before the samples, so a deletion committing in between can only make the job's layers look
   stale (discarded and retrained), never let a deleted sample's layers look current.
2. Train, outside any transaction; each finished stage is recorded as progress.
3. Record: the trained stages become layers (state ``training``, not served) in one
   transaction that first claims their artifacts (``service.artifacts.collection.claim``); a
   second, short one locks the model, activates them if their slice versions are still
   current, and :func:`settle` decides the rest (how the job's deletions move on is
   ``service.jobs.settlement``'s).
4. Under an approximate policy, the pass statistics of the chain just served are computed and
   stored (:func:`keep_statistics`); the layers never wait for them.

A failure is recorded on the job (``failed`` with the error, waiting deletions ``failed`` too)
before it propagates, so Celery's retry policy still applies: the skeleton every job runner
shares (``service.jobs.runner``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from sqlalchemy.orm import Session

from service.artifacts.collection import claim
from service.db.models import Job, JobStatus, Model, ModelStatus, SliceSequence
from service.db.models.job_params import SequenceParams
from service.db.repositories import (
    ArtifactRepository,
    AuditRepository,
    DeletionRepository,
    JobRepository,
    LineageRepository,
    ModelRepository,
    StatisticsRepository,
)
from service.db.repositories.audit import SYSTEM_ACTOR, audit_chain
from service.db.repositories.jobs import LIVE_STATUSES
from service.db.repositories.lineage import Activation
from service.engine import Engines, engine_for
from service.errors import LineageError
from service.jobs import settlement
from service.jobs.runner import JobOutcome, Transaction, claim_job, failure_recorded, lock_job
from service.queues import Priority
from service.training import scheduling
from service.training.service import SequenceJob, read_sequence_job, record_layers
from service.webhooks import events
from unlearning.approx.prefix_pass import chain_statistics
from unlearning.artifacts import ArtifactNotFoundError
from unlearning.s3t import S3TEngine, TrainedLayer

log = logging.getLogger(__name__)


def run_sequence_job(
    transaction: Transaction, engines: Engines, job_id: uuid.UUID
) -> JobOutcome | None:
    """Train the job's stages on its model's base model and serve those still valid; None
    when the job had already finished (a redelivered message changes nothing). A base model
    that cannot be loaded (its files changed since registration) fails the job with why."""
    with failure_recorded(transaction, job_id, on_failure=lambda s, job: settle(s, job, None)):
        with transaction() as session:
            work = _start(session, job_id)
            if work is None:
                return None
        engine = engine_for(engines, work.base)

        def progress(stage: int) -> None:
            with transaction() as session:
                jobs = JobRepository.from_session(session)
                jobs.progress(jobs.get(job_id), stage - work.from_stage + 1)

        trained, layer_ids = _train_and_record(transaction, engine, work, job_id, progress)
        with transaction() as session:
            jobs = JobRepository.from_session(session)
            job = lock_job(session, job_id)
            activation = LineageRepository.from_session(session).activate(work.model_id, layer_ids)
            jobs.progress(job, len(trained))
            note = None
            if activation.discarded_layer_ids:
                note = (
                    f"{len(activation.discarded_layer_ids)} stage(s) discarded: their slices "
                    "lost samples during training; a follow-up job retrains them"
                )
            ok = bool(activation.activated_layer_ids)
            jobs.finish(job, JobStatus.succeeded if ok else JobStatus.cancelled, note)
            settle(session, job, activation)
            generation = ModelRepository.from_session(session).get(job.model_id).serving_generation
    top = layer_ids[-1]
    if work.keep_statistics and top in activation.activated_layer_ids:
        keep_statistics(transaction, engine, work, trained, top)
    return JobOutcome(work.model_id, activation, generation)


def _train_and_record(
    transaction: Transaction,
    engine: S3TEngine,
    work: SequenceJob,
    job_id: uuid.UUID,
    progress: Callable[[int], None],
) -> tuple[list[TrainedLayer], list[int]]:
    """Train the job's stages and record them as ``training`` layers (inert until activated:
    no lock needed). The recording claims their artifacts first: if equal bytes were collected
    between the engine's write (a no-op: they were stored) and the claim, the stages are trained
    once more, which writes the same bytes again."""

    def train() -> list[TrainedLayer]:
        return engine.retrain(
            work.spec, work.key, work.from_stage, work.samples, work.prefix, on_stage=progress
        )

    def record(trained: list[TrainedLayer]) -> list[int]:
        with transaction() as session:
            claim(session, engine.store, [layer.artifact for layer in trained])
            return record_layers(session, work, trained, job_id)

    trained = train()
    try:
        return trained, record(trained)
    except ArtifactNotFoundError:
        log.warning("job %s: its artifacts were collected as it wrote them; training again", job_id)
        trained = train()
        return trained, record(trained)


def keep_statistics(
    transaction: Transaction,
    engine: S3TEngine,
    work: SequenceJob,
    trained: list[TrainedLayer],
    top: int,
) -> None:
    """Store the pass statistics of the chain just served, over the data it was trained on
    (after serving it: the layers do not wait for them). Without them a pass computes what it
    needs from the data, so a failure here is logged, never the job's. An empty shard has none
    (no deletion can reach it)."""
    if not work.samples:
        return
    try:
        chain = [*work.prefix, *(t.artifact for t in sorted(trained, key=lambda t: t.stage))]
        statistics = chain_statistics(
            engine.backbone, work.spec.config, [engine.load_stage(r) for r in chain], work.samples
        )
        ref = engine.store.put(statistics.to_bytes())
        with transaction() as session:
            claim(session, engine.store, [ref])
            StatisticsRepository.from_session(session).record(top, ref, statistics.count)
    except Exception:
        log.exception("the pass statistics of layer %s were not stored", top)


def _start(session: Session, job_id: uuid.UUID) -> SequenceJob | None:
    # First, so that artifact collection orders itself after this transaction: the prefix read
    # below is pinned (``SequenceParams.prefix``) and stays stored while the job runs.
    ArtifactRepository.from_session(session).lock(exclusive=False)
    job = claim_job(session, job_id)  # not the model: reading needs no lock (see below)
    if job is None:
        return None
    if job.sequence_id is None or job.from_stage is None:
        raise LineageError(f"job {job.id} names no sequence to train")
    _start_parent(JobRepository.from_session(session), job)
    valid = LineageRepository.from_session(session).exact_length(job.model_id, job.sequence_id)
    job.from_stage = min(job.from_stage, valid + 1)
    work = read_sequence_job(session, job.sequence_id, job.from_stage)
    job.params = SequenceParams(prefix=list(work.prefix_layer_ids)).dump()
    job.stages_total = work.spec.config.n_slices - job.from_stage + 1
    job.stages_done = 0
    settlement.on_job_started(session, job)
    return work


def _start_parent(jobs: JobRepository, job: Job) -> None:
    if job.parent_id is not None:
        parent = jobs.get_for_update(job.parent_id)
        if parent.status is JobStatus.queued:
            jobs.start(parent)


def settle(session: Session, job: Job, activation: Activation | None) -> None:
    """Everything a finished sequence job decides, in the transaction that finishes it: a job
    whose layers were discarded (their slices lost a sample meanwhile) hands its waiting
    deletions to the sequence's follow-up job; deletions whose jobs are all done complete (or
    fail); a parent job and its model's status follow their children."""
    model = ModelRepository.from_session(session).get_for_update(job.model_id)
    audit = AuditRepository.from_session(session)
    waiting = DeletionRepository.from_session(session).waiting_on(job.id)
    follow_up = None
    if activation is not None:
        refs = LineageRepository.from_session(session).artifact_refs(activation.activated_layer_ids)
        audit.append(
            audit_chain(model.id),
            actor=SYSTEM_ACTOR,
            action="layers.activated",
            payload={
                "job_id": str(job.id),
                "activated": [{"layer_id": i, "artifact": refs.get(i)} for i in refs],
                "discarded": activation.discarded_layer_ids,
                "serving_generation": model.serving_generation,
            },
        )
        if activation.discarded_layer_ids and job.sequence_id is not None:
            valid = LineageRepository.from_session(session).exact_length(model.id, job.sequence_id)
            sequence = session.get_one(SliceSequence, job.sequence_id)
            # Deletions waiting on it wait on its follow-up, which must run (a parked one is
            # sent); a parked order's discarded result follows at low priority.
            follow_up = scheduling.ensure_retrain(
                session,
                model,
                sequence,
                valid,
                priority=Priority.normal if waiting else Priority.low,
            )
    settlement.settle_deletions(session, waiting, follow_up=follow_up)
    if job.parent_id is not None:
        _settle_parent(session, model, job.parent_id)
    scheduling.release_due(session, model_id=model.id)


def _settle_parent(session: Session, model: Model, parent_id: uuid.UUID) -> None:
    jobs = JobRepository.from_session(session)
    parent = jobs.get(parent_id)
    children = jobs.children(parent_id)
    jobs.progress(parent, sum(c.stages_done for c in children))
    if parent.status not in LIVE_STATUSES or any(c.status in LIVE_STATUSES for c in children):
        return
    failed = [c for c in children if c.status is JobStatus.failed]
    if failed:
        jobs.finish(parent, JobStatus.failed, f"{len(failed)} sequence job(s) failed")
        model.status = ModelStatus.failed
    else:
        jobs.finish(parent, JobStatus.succeeded)
        model.status = ModelStatus.ready
        events.emit(session, model.tenant_id, "model.ready", events.model_data(model))
