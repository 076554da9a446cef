"""Measurements and grades as the API, the status and the dashboard show them."""

from __future__ import annotations

from sqlalchemy.orm import Session

from service.db.models import Model, QualityMeasurement
from service.db.repositories import SampleRepository
from service.quality import service
from service.quality.schemas import MeasuredQuality, MethodGrades, PassGradePublic, QualityReport

GRADING_NOTE = (
    "Each approximate pass is measured while it serves and graded once its deletion's exact "
    "retrains serve (other changes to the model in between count in the grade); only "
    "classifiers' passes are graded. "
)
ON_EVAL_ONLY = (
    "Grades compare the evaluation split alone (agreement, KL divergence, accuracy gap): the "
    "model keeps no deleted sample for grading (`grade_approximations` is off)."
)
ON_DELETED_TOO = (
    "Grades compare the evaluation split and the deleted samples, kept sealed until the grade "
    "(unlearning accuracy gap, a per-example membership test against the exact retrain)."
)


def measured(measurement: QualityMeasurement, model: Model) -> MeasuredQuality:
    return MeasuredQuality(
        metric=measurement.metric,
        value=measurement.value,
        loss=measurement.loss,
        n_eval=measurement.n_eval,
        serving_generation=measurement.serving_generation,
        current=measurement.serving_generation == model.serving_generation,
        measured_at=measurement.measured_at,
        live_shards=measurement.live_shards,
        served_depth=measurement.served_depth,
        seconds=measurement.seconds,
    )


def latest(session: Session, model: Model) -> MeasuredQuality | None:
    found = service.measurements(session, model.id, limit=1)
    return measured(found[0], model) if found else None


def quality_report(session: Session, model: Model, *, limit: int) -> QualityReport:
    history = [measured(m, model) for m in service.measurements(session, model.id, limit=limit)]
    return QualityReport(
        model_id=model.id,
        eval_samples=SampleRepository.from_session(session).eval_count(model.id),
        latest=history[0] if history else None,
        measurements=history,
        methods=[
            MethodGrades(
                method=r.method,
                grades=r.grades,
                mean_gap=r.mean_gap,
                mean_cost_share=r.mean_cost_share,
                summary=r.describe(),
            )
            for r in service.method_records(session, model.id).values()
        ],
        grades=[
            PassGradePublic(
                pass_job_id=g.pass_job_id,
                method=g.method,
                graded_at=g.graded_at,
                gap=g.gap,
                cost_share=g.cost_share,
                with_deleted=g.with_deleted,
                grade=g.grade,
            )
            for g in service.grades(session, model.id, limit=limit)
        ],
        note=GRADING_NOTE + (ON_DELETED_TOO if model.grade_approximations else ON_EVAL_ONLY),
    )
