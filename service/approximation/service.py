"""Approximate passes: whether a deletion gets one, planning it, reading what it needs (then
purging the payloads) and recording its layers.

A deletion under an approximate policy keeps its samples' payloads (identifiers are scrubbed at
once) and queues one approximate job next to the exact retrains. The job edits, for every
sequence whose layers the deletion invalidated, the invalidated stages (the rest of the chain is
the still-valid prefix) and records the results as ``approximate`` layers carrying the current
slice versions, linked to the request in ``layer_deletions``. They are served until the exact
retrain supersedes them; an approximate layer never replaces a valid one.

The method is the request's, or the model's; ``auto`` is chosen here by the request's shape
and, once its candidates have been graded on this model, by their grades (:func:`resolve_method`,
``service.quality``). Methods come from ``unlearning.approx.registry``; a request or a model
may override a named method's config (``method_config``, validated against the method's config
class when the request arrives; the request's settings win over the model's). The job's params
record the method and every setting it runs with. A method that reads the chain's stored pass
statistics (``layer_statistics``, written after training) gets them instead of the retain set,
which is then never read: they stand for exactly this deletion's forget set plus what remains,
which the chain check below guarantees. The deletion's retrains wait for the pass (parked,
released when it ends: ``scheduling.release_held``).

A sequence is passed over (left to the exact retrain) when its chain changed since the
deletion: a prefix layer was invalidated, a retrain or another pass already serves there, or
another deletion also touched the edited layers' slices (a pass removes only its own request's
samples, so it may only edit layers that saw no other deleted sample).

Functions here flush and never commit: the job's boundary does.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from service.db.models import (
    AUTO_METHOD,
    DeletionRequest,
    DeletionStatus,
    Job,
    JobKind,
    LayerState,
    Model,
    Sample,
    SamplePayload,
    SliceSequence,
    UnlearningPolicy,
)
from service.db.models.base import utcnow
from service.db.models.job_params import ApproximateParams, PlannedSequence
from service.db.repositories import (
    AuditRepository,
    DeletionRepository,
    JobRepository,
    KeptSamplesRepository,
    LineageRepository,
    ModelRepository,
    SampleRepository,
    StatisticsRepository,
)
from service.db.repositories.audit import SYSTEM_ACTOR, audit_chain
from service.db.repositories.lineage import (
    Activation,
    Deactivation,
    InvalidatedLayer,
    Prefix,
)
from service.engine import BaseModelKey, training_sample
from service.errors import InvalidInputError
from service.jobs import settlement
from service.quality.service import method_records
from service.settings import Settings
from service.training import scheduling
from service.training.service import NewLayer, read_sequence_job, record_chain, slice_indices
from service.webhooks import events
from unlearning.approx import registry
from unlearning.approx.graded_choice import MethodRecord, choose_by_grades
from unlearning.approx.prefix_pass import RequestShape, auto_candidates
from unlearning.approx.registry import MethodConfigError
from unlearning.families import Modality
from unlearning.s3t import ModelSpec, SequenceKey, TrainingSample
from unlearning.s3t.config import Task as UnlearningTask


@dataclass(frozen=True)
class ApproximationSettings:
    purge_deadline_s: float = 3600.0  # payloads wait at most this long for the pass
    grading_keep_s: float = 86_400.0  # and this much longer for its grading (on opt-in)
    auto_wait_s: float = 60.0  # policy `auto`: approximate when retrains wait longer
    head_start_s: float = 120.0  # the exact retrains wait at most this long for the pass

    @classmethod
    def from_settings(cls, settings: Settings) -> ApproximationSettings:
        """The timing of passes from ``UNLEARN_APPROXIMATE_*`` and ``_AUTO_APPROXIMATE_WAIT_S``."""
        return cls(
            purge_deadline_s=settings.approximate_purge_deadline_s,
            grading_keep_s=settings.grading_keep_s,
            auto_wait_s=settings.auto_approximate_wait_s,
            head_start_s=settings.approximate_head_start_s,
        )


def wants_approximation(session: Session, model: Model, settings: ApproximationSettings) -> bool:
    """Whether a deletion on this model gets an approximate pass before its exact retrain."""
    if model.unlearning_policy is UnlearningPolicy.exact:
        return False
    if model.unlearning_policy is UnlearningPolicy.approximate_then_exact:
        return True
    wait = JobRepository.from_session(session).expected_training_wait()
    return wait > settings.auto_wait_s


def keep_payloads(
    session: Session, model: Model, request: DeletionRequest, settings: ApproximationSettings
) -> None:
    """Seal the request's payloads for its pass (``kept_samples``) and delete their plaintext
    rows, both in the deletion's transaction; they wait until the deadline at the latest, longer
    by ``settings.grading_keep_s`` for a model that grades its passes on them."""
    sample_ids = DeletionRepository.from_session(session).deleted_sample_ids(request.id)
    samples = SampleRepository.from_session(session)
    KeptSamplesRepository.from_session(session).keep(
        request.id, model.id, samples.payloads_of(sample_ids)
    )
    samples.delete_payloads(sample_ids)
    grading = settings.grading_keep_s if grades_on_kept(session, model) else 0
    wait = settings.purge_deadline_s + grading
    request.payloads_purge_by = utcnow() + timedelta(seconds=wait)


def grades_on_kept(session: Session, model: Model) -> bool:
    """Whether the model's passes are graded on the deleted samples too: it opted in, and has
    an evaluation split (what measurements, and so grades, need)."""
    return (
        model.grade_approximations
        and SampleRepository.from_session(session).eval_count(model.id) > 0
    )


@dataclass(frozen=True)
class PassChoice:
    """A request's approximate method (a registered name, or ``auto``) and the overrides of
    its config (validated; empty: the method's defaults)."""

    method: str
    overrides: dict[str, Any] = field(default_factory=dict)


def model_modality(model: Model) -> Modality:
    """What the model's base model reads (text or images): which methods can serve it."""
    return Modality(model.base_model.modality.value)


def check_method(
    method: str, overrides: Mapping[str, Any] | None, task: UnlearningTask, modality: Modality
) -> dict[str, Any]:
    """``overrides`` of ``method``'s config, validated; InvalidInputError, with the registry's
    reason, when the method does not fit the task or the base model's modality, or a setting
    is unknown or bad. ``auto`` takes no overrides: the method it stands for is chosen per
    request, among those that fit."""
    overrides = dict(overrides or {})
    if method == AUTO_METHOD:
        if overrides:
            raise InvalidInputError(
                "`method_config` needs a named method: `auto` chooses one per request"
            )
        return overrides
    spec = registry.get(method)
    reason = spec.unfit(task, modality)
    if reason is not None:
        raise InvalidInputError(reason)
    try:
        spec.configure(overrides)
    except MethodConfigError as error:
        raise InvalidInputError(f"`method_config` of `{method}`: {error}") from error
    return overrides


def pass_method(
    model: Model, requested: str | None, overrides: Mapping[str, Any] | None = None
) -> PassChoice:
    """The request's method, or the model's, with its config overrides: the model's apply
    to the model's own method, and the request's win over them. InvalidInputError when the
    method does not fit the task or the overrides are not its config's."""
    method = model.approximate_method if requested is None else requested
    merged = dict(model.method_config or {}) if method == model.approximate_method else {}
    merged |= overrides or {}
    task = UnlearningTask(model.task.value)
    return PassChoice(method, check_method(method, merged, task, model_modality(model)))


def resolve_method(
    model: Model,
    choice: PassChoice,
    shape: RequestShape,
    share: float,
    records: Mapping[str, MethodRecord],
) -> tuple[str, str]:
    """The method a pass runs, and why: ``auto`` takes the candidates that fit the request's
    shape and the share of the affected shards' samples it removes, and chooses among them by
    the model's record of graded passes (``records``, by method), by the fixed rule until a
    method has enough grades (:func:`unlearning.approx.graded_choice.choose_by_grades`)."""
    if choice.method == AUTO_METHOD:
        task = UnlearningTask(model.task.value)
        candidates = auto_candidates(shape, task, share, model_modality(model))
        chosen, why = choose_by_grades(candidates, records)
        return chosen, f"auto: {why}"
    why = f"`{choice.method}`, named by the request or the model"
    if choice.overrides:
        settings = ", ".join(f"{k}={v!r}" for k, v in sorted(choice.overrides.items()))
        why += f", with {settings}"
    return choice.method, why


def plan_pass(
    session: Session,
    model: Model,
    request: DeletionRequest,
    deactivation: Deactivation,
    choice: PassChoice,
    shape: RequestShape,
    prefixes: Mapping[uuid.UUID, Prefix],
    settings: ApproximationSettings,
) -> Job | None:
    """Queue the request's approximate job over every sequence whose chain it cut: the valid
    prefix 1..k-1 followed by the layers it invalidated at k..L, and keep the request's
    payloads for it (until ``settings.purge_deadline_s``). None when there is none: the
    payloads are purged at once. ``prefixes``: the valid prefixes of the deletion's shards
    after it, by sequence."""
    keep_payloads(session, model, request, settings)
    invalidated: dict[uuid.UUID, list[InvalidatedLayer]] = defaultdict(list)
    for layer in deactivation.invalidated:
        invalidated[layer.sequence_id].append(layer)
    passes: list[PlannedSequence] = []
    sizes: dict[int, int] = {}  # per shard with a pass: the samples its chain trained on
    for sequence_id, first in sorted(deactivation.first_invalid_position.items()):
        prefix = prefixes[sequence_id].layer_ids
        run = sorted(invalidated[sequence_id], key=lambda layer: layer.position)
        parents = [prefix[-1] if prefix else None, *(layer.id for layer in run[:-1])]
        if (
            len(prefix) == first - 1
            and [layer.position for layer in run] == list(range(first, model.n_slices + 1))
            and [layer.parent_layer_id for layer in run] == parents
        ):
            chain = [*prefix, *(layer.id for layer in run)]
            passes.append(PlannedSequence(sequence_id=sequence_id, from_stage=first, chain=chain))
            sizes[prefixes[sequence_id].shard_index] = run[-1].trained_sample_count
    if not passes:
        settlement.purge_payloads(session, request, reason="no layer to approximate")
        return None
    share = len(deactivation.deleted_sample_ids) / max(1, sum(sizes.values()))
    records = method_records(session, model.id) if choice.method == AUTO_METHOD else {}
    chosen, why = resolve_method(model, choice, shape, share, records)
    spec = registry.get(chosen)
    job, _ = JobRepository.from_session(session).create(
        look_up=False,
        model_id=model.id,
        kind=JobKind.approximate,
        stages_total=len(passes),
        params=ApproximateParams(
            deletion_id=request.id,
            method=chosen,
            method_config=spec.settings(spec.configure(choice.overrides)),
            method_reason=why,
            sequences=passes,
        ).dump(),
    )
    scheduling.enqueue(session, job)
    DeletionRepository.from_session(session).link_new_jobs(request, {job.id})
    return job


@dataclass(frozen=True)
class SequencePass:
    """One sequence's pass: its chain's artifacts, the stage it edits from, and its data."""

    sequence_id: uuid.UUID
    key: SequenceKey
    from_stage: int
    artifacts: list[str]  # stages 1..L
    parent_layer_id: int | None  # the chain's stage from_stage-1
    stage_versions: dict[int, dict[uuid.UUID, int]]  # current versions, for the new layers
    forget: list[TrainingSample]
    retain: list[TrainingSample]  # empty when the statistics stand for it
    retain_count: int
    statistics: str | None  # the chain's pass statistics (artifact), valid for this deletion
    chain: tuple[int, ...] = ()  # the layers edited from (stages 1..L): the new layers' sources


@dataclass(frozen=True)
class PassWork:
    job_id: uuid.UUID
    model_id: uuid.UUID
    request_id: uuid.UUID
    spec: ModelSpec | None  # None when every sequence was passed over
    method: str
    method_reason: str
    sequences: list[SequencePass]
    base: BaseModelKey  # the base model the model's layers sit on
    method_config: object = None  # the method's config, as the job's params record it
    skipped: list[str] = field(default_factory=list)  # why a sequence was passed over


def read_pass(session: Session, job: Job) -> PassWork:
    """Everything the job's passes need; the request's sealed payloads are purged once read,
    unless the model grades its passes on them (:func:`grades_on_kept`)."""
    params = ApproximateParams.of(job)
    request = DeletionRepository.from_session(session).get(params.deletion_id)
    model = ModelRepository.from_session(session).get(job.model_id)
    kept_samples = KeptSamplesRepository.from_session(session)
    kept = kept_samples.get(request.id)
    rows = kept_samples.open(kept) if kept is not None else []
    sequences: list[SequencePass] = []
    skipped: list[str] = []
    spec: ModelSpec | None = None
    method = registry.get(params.method)
    # Jobs planned before configs were recorded have none: the method's defaults.
    method_config = method.configure(params.method_config)
    if not rows:
        skipped.append("the payloads were purged before the pass could read them")
    for planned in params.sequences if rows else []:
        sequence = session.get_one(SliceSequence, planned.sequence_id)
        from_stage, chain = planned.from_stage, planned.chain
        # The versions first, as a retrain reads them: a deletion after this read makes the
        # pass's layers stale (discarded), never current with a sample it did not unlearn.
        versions = LineageRepository.from_session(session).shard_versions(sequence.shard_id)
        reason = _chain_changed(session, job.model_id, sequence, from_stage, chain, versions, rows)
        if reason:
            skipped.append(f"sequence {sequence.index} of its shard: {reason}")
            continue
        cached = StatisticsRepository.from_session(session).of(chain[-1])
        statistics = cached if cached and method.reads_statistics else None
        work = read_sequence_job(session, sequence.id, from_stage, with_samples=statistics is None)
        spec = work.spec
        order = slice_indices(session, sequence)
        refs = LineageRepository.from_session(session).artifact_refs(chain)
        forget = [
            training_sample(model, sample, payload, work.key.shard, order[sample.slice_id])
            for sample, payload in rows
            if sample.slice_id in order
        ]
        sequences.append(
            SequencePass(
                sequence_id=sequence.id,
                key=work.key,
                from_stage=from_stage,
                artifacts=[refs[i] for i in chain],
                parent_layer_id=work.parent_layer_id,
                stage_versions={
                    stage: {slice_id: versions[slice_id] for slice_id in recorded}
                    for stage, recorded in work.stage_versions.items()
                },
                forget=forget,
                retain=work.samples,
                retain_count=(
                    statistics.sample_count - len(forget) if statistics else len(work.samples)
                ),
                statistics=statistics.artifact_ref if statistics else None,
                chain=tuple(chain),
            )
        )
    if kept is not None and rows and sequences and grades_on_kept(session, model):
        kept.for_grading = True  # the grading of this pass purges them (or the deadline)
    else:
        settlement.purge_payloads(session, request, reason="read by the approximate pass")
    return PassWork(
        job_id=job.id,
        model_id=job.model_id,
        request_id=request.id,
        spec=spec,
        method=method.name,
        method_reason=params.method_reason,
        sequences=sequences,
        base=BaseModelKey.of(model.base_model),
        skipped=skipped,
        method_config=method_config,
    )


def record_pass(
    session: Session, work: PassWork, sequence: SequencePass, artifacts: list[str]
) -> Activation:
    """Record one sequence's edited stages as approximate layers and serve them, whole, if
    they are still current and no layer of their chain was withdrawn (its deletion completed
    meanwhile: the edit derives from its data); call with the model row locked."""
    layer_ids = record_chain(
        session,
        sequence.sequence_id,
        sequence.parent_layer_id,
        [
            NewLayer(stage, artifact, sequence.retain_count)
            for stage, artifact in enumerate(artifacts, start=sequence.from_stage)
        ],
        sequence.stage_versions,
        work.job_id,
        approximate=True,
    )
    lineage = LineageRepository.from_session(session)
    activation = lineage.activate(work.model_id, layer_ids, sources=sequence.chain)
    lineage.link_deletion(activation.activated_layer_ids, work.request_id)
    refs = lineage.artifact_refs(activation.activated_layer_ids)
    AuditRepository.from_session(session).append(
        audit_chain(work.model_id),
        actor=SYSTEM_ACTOR,
        action="layers.approximated",
        payload={
            "deletion_id": str(work.request_id),
            "job_id": str(work.job_id),
            "method": work.method,
            "method_reason": work.method_reason,
            "statistics": sequence.statistics,
            "activated": [{"layer_id": i, "artifact": refs[i]} for i in refs],
            "discarded": activation.discarded_layer_ids,
        },
    )
    return activation


def mark_approximated(session: Session, request_id: uuid.UUID) -> None:
    """The request's layers are served again, approximately (its exact retrain may already be
    running: the status then stays `retraining` and only the timestamp is set)."""
    deletions = DeletionRepository.from_session(session)
    request = deletions.get(request_id)
    if request.status is DeletionStatus.deactivated:
        deletions.advance(request, DeletionStatus.approximated)
    elif request.approximated_at is None:
        request.approximated_at = utcnow()
    else:
        return  # an earlier sequence's pass reported it
    events.emit(session, request.tenant_id, "deletion.approximated", events.deletion_data(request))


def purge_overdue(session: Session, *, limit: int = 100) -> int:
    """Purge the payloads whose approximate pass did not read them by the deadline; their
    deletions become exact-only. Returns how many requests were purged."""
    overdue = DeletionRepository.from_session(session).overdue_purges(utcnow(), limit=limit)
    for request in overdue:
        settlement.purge_payloads(session, request, reason="deadline")
    return len(overdue)


def _chain_changed(
    session: Session,
    model_id: uuid.UUID,
    sequence: SliceSequence,
    from_stage: int,
    chain: list[int],
    versions: dict[uuid.UUID, int],
    rows: list[tuple[Sample, SamplePayload]],
) -> str | None:
    """Why the planned chain can no longer be edited, or None."""
    lineage = LineageRepository.from_session(session)
    prefix = lineage.prefixes(model_id, sequence_id=sequence.id)[0]
    if prefix.layer_ids != tuple(chain[: from_stage - 1]):
        return "its valid prefix changed (a retrain, another pass or another deletion)"
    edited = chain[from_stage - 1 :]
    layers = lineage.by_ids(edited)
    if any(layers[i].state is not LayerState.invalidated for i in edited):
        return "its invalidated layers were replaced"
    touched = {sample.slice_id for sample, _ in rows}
    for recorded in lineage.recorded_versions(edited).values():
        moved = sum(versions[slice_id] - version for slice_id, version in recorded.items())
        if moved != len(touched & recorded.keys()):
            return "another deletion also touched its slices; the exact retrain covers both"
    return None
