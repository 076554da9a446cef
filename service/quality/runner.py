"""Measuring what a model serves: the body of the ``measure_quality`` task (the `training`
queue, low priority), and the measurement an approximate pass takes of its own layers.

1. Read (one transaction): the model's live evaluation rows, the passes due for a grade
   (:func:`service.quality.service.due_grades`, with their kept samples), then its serving
   choice at its current generation (:func:`~service.serving.registry.load_served_model`).
2. Score the served ensemble on them outside any transaction
   (:func:`service.quality.measure.score`).
3. Record (one transaction): the measurement, for the generation read in 1, then the grade of
   each due pass (:func:`service.quality.service.grade`), which purges its kept samples.
"""

from __future__ import annotations

import uuid

from service.db.models import DeletionRequest, JobStatus, PassGrade, QualityMeasurement
from service.db.repositories import JobRepository, ModelRepository
from service.engine import Engines, engine_for
from service.jobs.runner import Transaction, claim_job, failure_recorded, lock_job
from service.quality import service
from service.quality.measure import Scored, score
from service.serving.registry import ServedModel, load_served_model


def run_measurement(
    transaction: Transaction, engines: Engines, job_id: uuid.UUID
) -> QualityMeasurement | None:
    """Measure the job's model as it serves now and grade what that supersedes; None for a job
    that had finished (a redelivered message)."""
    with failure_recorded(transaction, job_id, lock_model=False):
        with transaction() as session:
            job = claim_job(session, job_id)
            if job is None:
                return None
            model_id = job.model_id
        measured = measure(transaction, engines, model_id, job_id=job_id, grade=True)
        with transaction() as session:
            job = lock_job(session, job_id)
            JobRepository.from_session(session).progress(job, 1)
            if measured is None:
                note = "nothing to measure: the model's evaluation split is empty"
                JobRepository.from_session(session).finish(job, JobStatus.cancelled, note)
                return None
            measurement, grades = measured
            note = (
                f"measured {measurement.metric} at generation {measurement.serving_generation} "
                f"on {measurement.n_eval} evaluation row(s)"
                + (f"; graded {len(grades)} approximate pass(es)" if grades else "")
            )
            JobRepository.from_session(session).finish(job, JobStatus.succeeded, note)
        return measurement


def measure(
    transaction: Transaction,
    engines: Engines,
    model_id: uuid.UUID,
    *,
    job_id: uuid.UUID,
    grade: bool,
    kept_for: uuid.UUID | None = None,
) -> tuple[QualityMeasurement, list[PassGrade]] | None:
    """Score the model as it serves now on its evaluation split and record it under
    ``job_id`` (a measurement job, or an approximate pass measuring its own layers); with
    ``grade``, grade the passes whose deletion completed, and purge what was kept for them;
    ``kept_for``: a deletion whose kept samples are scored too (a pass of a model that grades on
    them). None when the model has no evaluation row."""
    with transaction() as session:
        model = ModelRepository.from_session(session).get(model_id)
        rows = service.eval_rows(session, model)
        # The passes to grade before the served model: a deletion seen completed here is
        # completed in what is read next (read committed never goes back in time).
        due = service.due_grades(session, model) if grade and rows else []
        served = load_served_model(session, model_id)
        request = session.get(DeletionRequest, kept_for) if kept_for is not None else None
        kept = service.kept_rows(session, model, request) if request is not None else None
    if not rows:
        return None
    scored = forget = None
    forgets: dict[uuid.UUID, Scored] = {}
    if served.shards:
        engine = engine_for(engines, served.base)
        scored = score(engine, served.config, served.prefixes, rows)
        if kept:
            forget = score(engine, served.config, served.prefixes, kept)
        for pending in due:
            if pending.forget:
                forgets[pending.job_id] = score(
                    engine, served.config, served.prefixes, pending.forget
                )
    with transaction() as session:
        model = ModelRepository.from_session(session).get(model_id)
        measurement = service.record(
            session,
            model,
            served.generation,
            scored,
            job_id=job_id,
            n_eval=len(rows),
            forget=forget,
            grading_seconds=sum(f.seconds for f in forgets.values()),
            **_proxy(served),
        )
        grades = []
        for pending in due:
            on_kept = forgets.get(pending.job_id)
            graded = service.grade(
                session, model, measurement, pending, on_kept.outputs if on_kept else None
            )
            if graded is not None:
                grades.append(graded)
    return measurement, grades


def _proxy(served: ServedModel) -> dict[str, float]:
    """The proxy next to the measurement: the shares of shards and of stages served."""
    depth = sum(shard.length for shard in served.shards)
    return {
        "live_shards": len(served.shards) / served.n_shards,
        "served_depth": depth / (served.n_shards * served.config.n_slices),
    }
