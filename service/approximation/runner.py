"""Running one approximate job: the body of the `deletions` queue's task.

1. Start (one transaction, job locked): a finished job is a redelivered message and changes
   nothing; otherwise the passes' data is read and the request's payloads are purged.
2. Per sequence: edit the invalidated stages outside any transaction, then record and serve them
   in a short transaction with the model locked (a chain that moved meanwhile is discarded),
   which first claims their artifacts (``service.artifacts.collection.claim``). The chains the
   job planned are pinned by it: artifact collection keeps them while it is live.
3. Finish the job; then, when the model has an evaluation split, measure it while the pass's
   layers serve (``service.quality``: what grades the pass once its exact retrain serves). A
   failure is recorded on the job only (``service.jobs.runner``, the skeleton
   every job runner shares): the deletion's exact retrain goes on.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.orm import Session

from service.approximation.service import (
    PassWork,
    SequencePass,
    mark_approximated,
    read_pass,
    record_pass,
)
from service.artifacts.collection import claim
from service.db.models import Job, JobStatus
from service.db.models.job_params import ApproximateParams
from service.db.repositories import JobRepository, ModelRepository
from service.db.repositories.lineage import Activation
from service.engine import Engines, engine_for
from service.jobs.runner import JobOutcome, Transaction, claim_job, failure_recorded, lock_job
from service.quality import runner as quality
from service.training import scheduling
from unlearning.approx.data import UnlearningInputError
from unlearning.approx.prefix_pass import approximate_stages, examples_of
from unlearning.approx.statistics import PassStatistics
from unlearning.artifacts import ArtifactNotFoundError
from unlearning.s3t import S3TEngine

log = logging.getLogger(__name__)


def run_approximate_job(
    transaction: Transaction, engines: Engines, job_id: uuid.UUID
) -> JobOutcome | None:
    """Run the job's passes on its model's base model and serve their layers; None for a job
    that had finished."""
    with failure_recorded(transaction, job_id, on_failure=_release_held):
        with transaction() as session:
            job = claim_job(session, job_id)
            if job is None:
                return None
            work = read_pass(session, job)
        engine = engine_for(engines, work.base)
        activated: list[int] = []
        discarded: list[int] = []
        refused: list[str] = []
        for done, sequence in enumerate(work.sequences, start=1):
            try:
                artifacts = edit(engine, work, sequence)
            except ArtifactNotFoundError:  # collected: its layer was retrained meanwhile
                refused.append(f"sequence {sequence.sequence_id}: its exact retrain came first")
                continue
            except UnlearningInputError as error:  # this data does not suit the method
                refused.append(
                    f"sequence {sequence.sequence_id} left to the exact retrain: {error}"
                )
                continue
            try:
                with transaction() as session:
                    claim(session, engine.store, artifacts)  # first: see its docstring
                    job = lock_job(session, job_id)
                    activation = record_pass(session, work, sequence, artifacts)
                    JobRepository.from_session(session).progress(job, done)
                    if activation.activated_layer_ids:
                        mark_approximated(session, work.request_id)
            except ArtifactNotFoundError:  # equal bytes collected as it wrote them: rare
                refused.append(f"sequence {sequence.sequence_id}: its edit was collected")
                continue
            activated += activation.activated_layer_ids
            discarded += activation.discarded_layer_ids
        with transaction() as session:
            job = lock_job(session, job_id)
            notes = [f"method {work.method} ({work.method_reason})", *work.skipped, *refused]
            if discarded:
                notes.append(f"{len(discarded)} stage(s) discarded: their chain moved meanwhile")
            status = JobStatus.succeeded if activated else JobStatus.cancelled
            JobRepository.from_session(session).finish(job, status, "; ".join(notes))
            scheduling.release_held(session, work.request_id)
            generation = ModelRepository.from_session(session).get(job.model_id).serving_generation
    if activated:
        _measure_pass(transaction, engines, work.model_id, job_id, work.request_id)
    return JobOutcome(work.model_id, Activation(activated, discarded), generation)


def _measure_pass(
    transaction: Transaction,
    engines: Engines,
    model_id: uuid.UUID,
    job_id: uuid.UUID,
    request_id: uuid.UUID,
) -> None:
    """Measure the model while the pass's layers serve: what its grade compares with the exact
    retrain's measurement later. Read at once after the job's commit (its retrains take far
    longer), and after it, so that it is no part of the pass's cost; the deletion's samples too
    when they were kept for the grading. A failure to measure leaves the pass ungraded, never
    failed."""
    try:
        quality.measure(
            transaction, engines, model_id, job_id=job_id, grade=False, kept_for=request_id
        )
    except Exception:
        log.exception("measuring the pass of job %s failed; it will not be graded", job_id)


def _release_held(session: Session, job: Job) -> None:
    """A failed pass holds its deletion's retrains no longer."""
    scheduling.release_held(session, ApproximateParams.of(job).deletion_id)


def edit(engine: S3TEngine, work: PassWork, sequence: SequencePass) -> list[str]:
    """Run the method on one sequence's chain; the artifacts of the edited stages. With the
    chain's statistics only the forget set is encoded."""
    assert work.spec is not None
    config = work.spec.config
    statistics = (
        PassStatistics.from_bytes(engine.store.get(sequence.statistics))
        if sequence.statistics
        else None
    )
    edited = approximate_stages(
        engine.backbone,
        config,
        [engine.load_stage(ref) for ref in sequence.artifacts],
        sequence.from_stage - 1,
        examples_of(engine.backbone, config, sequence.forget),
        None if statistics else examples_of(engine.backbone, config, sequence.retain),
        work.method,
        statistics=statistics,
        method_config=work.method_config,
    )
    return [engine.store.put(weights.to_bytes()) for weights in edited]
