"""Measuring served quality and grading approximate passes: scheduling, recording, reading.
Flushes, never commits.

- :func:`schedule_due` (each housekeeping round): a ready model whose serving generation has
  moved past its last measurement, and which has an evaluation split, gets a low-priority
  ``measure_quality`` job on its `training` queue. A burst of changes (deletions, passes,
  retrains, restores) is measured once, at the generation the job finds when it runs.
- :func:`due_grades` finds, before a measurement, each approximate pass of the model whose
  deletion completed (its exact retrains serve now), with the deletion's samples kept sealed
  for it when the model grades on them; :func:`record` stores the measurement and
  :func:`grade` compares the outputs measured while the pass served (the pass measures itself
  right after its layers serve) with those measured now, on the evaluation rows both saw and on
  the kept samples, then purges them.
- :func:`method_records` sums the grades per method: what ``auto`` chooses from.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.models import (
    DeletionJob,
    DeletionRequest,
    DeletionStatus,
    Job,
    JobKind,
    JobStatus,
    Model,
    ModelStatus,
    PassGrade,
    QualityMeasurement,
    Sample,
    SamplePayload,
    Split,
)
from service.db.models.job_params import ApproximateParams, MeasureParams
from service.db.repositories import JobRepository, KeptSamplesRepository, SampleRepository
from service.db.repositories.jobs import LIVE_STATUSES
from service.engine import training_sample
from service.jobs import settlement
from service.quality.measure import EvalRows, Outputs, Scored, metric_of
from service.queues import Priority
from service.training import scheduling
from unlearning.approx.graded_choice import MethodRecord
from unlearning.evaluation.grading import Outputs as GradedOutputs
from unlearning.evaluation.grading import PassGrade as EvaluatedPass
from unlearning.evaluation.grading import grade_pass
from unlearning.s3t.config import Task as UnlearningTask


def eval_rows(session: Session, model: Model) -> EvalRows:
    """The model's live evaluation rows, in sample id order."""
    return _as_rows(model, SampleRepository.from_session(session).eval_set(model.id))


def _as_rows(model: Model, rows: list[tuple[Sample, SamplePayload]]) -> EvalRows:
    samples = [training_sample(model, sample, payload, 0, 0) for sample, payload in rows]
    return EvalRows(
        tuple(sample.id for sample, _ in rows),
        tuple(s.content for s in samples),
        tuple(float(s.target) for s in samples),
    )


def schedule_due(session: Session, *, limit: int = 50) -> int:
    """Queue a measurement for each ready model measured at an older generation than it serves
    (one live job per model, none while a pass is pending; a generation whose measurement
    failed is not retried until the model changes again). Returns how many were queued."""
    measured = (
        sa.select(QualityMeasurement.id)
        .where(
            QualityMeasurement.model_id == Model.id,
            QualityMeasurement.serving_generation >= Model.serving_generation,
        )
        .exists()
    )
    has_eval = (
        sa.select(Sample.id)
        .where(Sample.model_id == Model.id, Sample.split == Split.eval, Sample.deleted.is_(False))
        .exists()
    )
    # A live measurement measures the latest generation when it runs; a pending pass measures
    # the model once its layers serve (a burst of deletions and their passes: measured once).
    live = (
        sa.select(Job.id)
        .where(
            Job.model_id == Model.id,
            Job.kind.in_([JobKind.measure_quality, JobKind.approximate]),
            Job.status.in_(LIVE_STATUSES),
        )
        .exists()
    )
    due = session.scalars(
        sa.select(Model)
        .where(Model.status == ModelStatus.ready, has_eval, ~measured, ~live)
        .order_by(Model.updated_at)
        .limit(limit)
    ).all()
    jobs = JobRepository.from_session(session)
    queued = 0
    for model in due:
        last = jobs.latest_of_kind(model.id, JobKind.measure_quality, limit=1)
        if last and MeasureParams.of(last[0]).generation >= model.serving_generation:
            continue  # it failed at this generation: wait for the next change
        job, created = jobs.create(
            model_id=model.id,
            kind=JobKind.measure_quality,
            stages_total=1,
            params=MeasureParams(generation=model.serving_generation).dump(),
            dedup_key=f"measure:{model.id}",
        )
        if created:
            scheduling.enqueue(session, job, priority=Priority.low)
            queued += 1
    return queued


def record(
    session: Session,
    model: Model,
    generation: int,
    scored: Scored | None,
    *,
    job_id: uuid.UUID | None,
    live_shards: float,
    served_depth: float,
    n_eval: int,
    forget: Scored | None = None,
    grading_seconds: float = 0.0,
) -> QualityMeasurement:
    """Store one measurement (``scored`` None: the model answered nothing at ``generation``;
    ``forget``: the outputs on a deletion's kept samples, which its pass's grade compares;
    ``grading_seconds``: what scoring the kept samples of the passes it grades took)."""
    measurement = QualityMeasurement(
        model_id=model.id,
        job_id=job_id,
        serving_generation=generation,
        metric=scored.metric if scored else metric_of(UnlearningTask(model.task.value)),
        value=scored.value if scored else None,
        loss=scored.loss if scored else None,
        n_eval=n_eval,
        live_shards=live_shards,
        served_depth=served_depth,
        seconds=(scored.seconds if scored else 0.0)
        + (forget.seconds if forget else 0.0)
        + grading_seconds,
        outputs=scored.outputs.to_bytes(forget.outputs if forget else None) if scored else None,
    )
    session.add(measurement)
    session.flush()
    return measurement


@dataclass(frozen=True)
class DueGrade:
    """A pass whose deletion completed, to be graded by the next measurement: with the
    measurement taken while it served (None: it served too briefly; only its kept samples are
    purged), and the deletion's kept samples when the model grades on them."""

    job_id: uuid.UUID
    request_id: uuid.UUID
    method: str
    served: bytes | None  # the outputs measured while it served
    forget: EvalRows | None


def due_grades(session: Session, model: Model) -> list[DueGrade]:
    """The model's succeeded approximate jobs without a grade whose deletion completed (its
    exact retrains serve, its approximate layers are withdrawn), oldest first."""
    graded = sa.select(PassGrade.pass_job_id).where(PassGrade.model_id == model.id)
    passes = session.scalars(
        sa.select(Job)
        .where(
            Job.model_id == model.id,
            Job.kind == JobKind.approximate,
            Job.status == JobStatus.succeeded,
            Job.id.not_in(graded),
        )
        .order_by(Job.created_at)
    ).all()
    due = []
    for job in passes:
        params = ApproximateParams.of(job)
        request = session.get(DeletionRequest, params.deletion_id)
        if request is None or request.status is not DeletionStatus.completed:
            continue
        served = _pass_measurement(session, job.id)
        outputs = served.outputs if served is not None else None
        if outputs is None and request.payloads_purged_at is not None:
            continue  # never measured, nothing kept: nothing to grade nor purge
        forget = kept_rows(session, model, request)
        due.append(DueGrade(job.id, request.id, params.method, outputs, forget))
    return due


def kept_rows(session: Session, model: Model, request: DeletionRequest) -> EvalRows | None:
    """The deletion's samples kept (sealed) for the grading of its pass, as evaluation rows."""
    kept_samples = KeptSamplesRepository.from_session(session)
    kept = kept_samples.get(request.id)
    if kept is None or not kept.for_grading:
        return None
    return _as_rows(model, kept_samples.open(kept))


def grade(
    session: Session,
    model: Model,
    now: QualityMeasurement,
    due: DueGrade,
    forget: Outputs | None,
) -> PassGrade | None:
    """Grade one pass against ``now`` (the exact model; ``forget``: its outputs on the
    deletion's kept samples), then purge the samples kept for it. None when the pass was not
    measured while it served."""
    graded = _compare(session, now, due, forget)
    request = session.get_one(DeletionRequest, due.request_id)
    row = None
    if graded is not None:
        row = PassGrade(
            model_id=model.id,
            job_id=now.job_id,
            pass_job_id=due.job_id,
            method=due.method,
            gap=graded.gap,
            cost_share=_cost_share(session, session.get_one(Job, due.job_id), request),
            with_deleted=graded.n_forget > 0,
            grade=graded.to_dict(),
        )
        session.add(row)
        session.flush()
    settlement.purge_payloads(
        session, request, reason="graded" if row is not None else "pass not measured"
    )
    return row


def _compare(
    session: Session, now: QualityMeasurement, due: DueGrade, forget: Outputs | None
) -> EvaluatedPass | None:
    if due.served is None or now.outputs is None:
        return None
    approximate, approximate_forget = Outputs.from_bytes(due.served)
    exact, _ = Outputs.from_bytes(now.outputs)
    labels = _labels(session, approximate.sample_ids.tolist())
    common = sorted(set(labels) & set(exact.sample_ids.tolist()))  # live on both sides
    if not common:
        return None
    eval_labels = [labels[i] for i in common]
    if due.forget is None or forget is None or approximate_forget is None:
        return grade_pass(
            GradedOutputs(approximate.on(common)),
            GradedOutputs(exact.on(common)),
            eval_labels=eval_labels,
        )
    ids = list(due.forget.sample_ids)
    exact_outputs = GradedOutputs(exact.on(common), forget.on(ids))
    return grade_pass(
        GradedOutputs(approximate.on(common), approximate_forget.on(ids)),
        exact_outputs,
        eval_labels=eval_labels,
        forget_labels=[int(target) for target in due.forget.targets],
        # The exact retrain never saw the deleted samples: it calibrates each row's score.
        references=[exact_outputs],
    )


def _pass_measurement(session: Session, job_id: uuid.UUID) -> QualityMeasurement | None:
    return session.scalar(
        sa.select(QualityMeasurement)
        .where(QualityMeasurement.job_id == job_id)
        .order_by(QualityMeasurement.id.desc())
        .limit(1)
    )


def _labels(session: Session, sample_ids: list[int]) -> dict[int, int]:
    """The labels of these evaluation samples that are still live (a deleted one has none)."""
    rows = SampleRepository.from_session(session).payloads_of(sample_ids)
    return {s.id: p.label_index for s, p in rows if p.label_index is not None}


def _cost_share(session: Session, job: Job, request: DeletionRequest) -> float:
    """The pass's seconds over those of the exact retrains its deletion waited for."""
    retrains = session.scalars(
        sa.select(Job)
        .join(DeletionJob, DeletionJob.job_id == Job.id)
        .where(DeletionJob.request_id == request.id, Job.kind == JobKind.retrain)
    ).all()
    exact = sum(j.run_seconds for j in retrains)
    return job.run_seconds / exact if exact > 0 else 0.0


def method_records(session: Session, model_id: uuid.UUID) -> dict[str, MethodRecord]:
    """Per method, the model's graded passes: how many, their mean gap and mean cost share."""
    rows = session.execute(
        sa.select(PassGrade.method, PassGrade.gap, PassGrade.cost_share).where(
            PassGrade.model_id == model_id
        )
    )
    by_method: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for method, gap, cost in rows:
        by_method[method].append((gap, cost))
    return {
        method: MethodRecord(
            method=method,
            grades=len(values),
            mean_gap=min(sum(g for g, _ in values) / len(values), 100.0),
            mean_cost_share=sum(c for _, c in values) / len(values),
        )
        for method, values in sorted(by_method.items())
    }


def measurements(
    session: Session, model_id: uuid.UUID, *, limit: int, since: datetime | None = None
) -> list[QualityMeasurement]:
    """The model's measurements, newest first."""
    query = sa.select(QualityMeasurement).where(QualityMeasurement.model_id == model_id)
    if since is not None:
        query = query.where(QualityMeasurement.measured_at >= since)
    return list(session.scalars(query.order_by(QualityMeasurement.id.desc()).limit(limit)))


def grades(session: Session, model_id: uuid.UUID, *, limit: int) -> list[PassGrade]:
    """The model's pass grades, newest first."""
    return list(
        session.scalars(
            sa.select(PassGrade)
            .where(PassGrade.model_id == model_id)
            .order_by(PassGrade.id.desc())
            .limit(limit)
        )
    )
