"""Approximate passes: whether a deletion gets one, planning it, reading what it needs (then
purging the payloads) and recording its layers.

A deletion under an approximate policy keeps its samples' payloads (identifiers are scrubbed at
once) and queues one approximate job next to the exact retrains. The job edits, for every
sequence whose layers the deletion invalidated, the invalidated stages (the rest of the chain is
the still-valid prefix) and records the results as ``approximate`` layers carrying the current
slice versions, linked to the request in ``layer_deletions``. They are served until the exact
retrain supersedes them; an approximate layer never replaces a valid one.

The method is the request's, or the model's; ``auto`` is chosen here by the request's shape
(:func:`resolve_method`). A method that reads the chain's stored pass statistics
(``layer_statistics``, written after training) gets them instead of the retain set, which is
then never read: they stand for exactly this deletion's forget set plus what remains, which the
chain check below guarantees. The deletion's retrains wait for the pass (parked, released when
it ends: ``scheduling.release_held``).

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

from sqlalchemy.orm import Session

from service.db.models import (
    ApproximateMethod,
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
from service.db.repositories import (
    AuditRepository,
    DeletionRepository,
    JobRepository,
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
from service.deletions import lifecycle
from service.engine import training_sample
from service.errors import InvalidInputError
from service.training import scheduling
from service.training.service import NewLayer, read_sequence_job, record_chain, slice_indices
from unlearning.approx.prefix_pass import (
    READS_STATISTICS,
    Method,
    RequestShape,
    choose_method,
    unfit,
)
from unlearning.s3t import ModelSpec, SequenceKey, TrainingSample
from unlearning.s3t.config import Task as UnlearningTask


@dataclass(frozen=True)
class ApproximationSettings:
    purge_deadline_s: float = 3600.0  # payloads wait at most this long for the pass
    auto_wait_s: float = 60.0  # policy `auto`: approximate when retrains wait longer
    head_start_s: float = 120.0  # the exact retrains wait at most this long for the pass


def wants_approximation(session: Session, model: Model, settings: ApproximationSettings) -> bool:
    """Whether a deletion on this model gets an approximate pass before its exact retrain."""
    if model.unlearning_policy is UnlearningPolicy.exact:
        return False
    if model.unlearning_policy is UnlearningPolicy.approximate_then_exact:
        return True
    wait = JobRepository.from_session(session).expected_training_wait()
    return wait > settings.auto_wait_s


def keep_payloads(request: DeletionRequest, settings: ApproximationSettings) -> None:
    """The request's payloads wait for its pass, until the deadline at the latest."""
    request.payloads_purge_by = utcnow() + timedelta(seconds=settings.purge_deadline_s)


def pass_method(model: Model, requested: str | None) -> ApproximateMethod:
    """The request's method, or the model's; InvalidInputError when it does not fit the task."""
    if requested is None:
        return model.approximate_method
    if requested != ApproximateMethod.auto:
        reason = unfit(Method(requested), UnlearningTask(model.task.value))
        if reason is not None:
            raise InvalidInputError(reason)
    return ApproximateMethod(requested)


def resolve_method(
    model: Model, method: ApproximateMethod, shape: RequestShape, share: float
) -> tuple[Method, str]:
    """The method a pass runs, and why: ``auto`` chooses by the request's shape and the share
    of the affected shards' samples it removes."""
    if method is ApproximateMethod.auto:
        chosen, why = choose_method(shape, UnlearningTask(model.task.value), share)
        return chosen, f"auto: {why}"
    return Method(method.value), f"`{method.value}`, named by the request or the model"


def plan_pass(
    session: Session,
    model: Model,
    request: DeletionRequest,
    deactivation: Deactivation,
    method: ApproximateMethod,
    shape: RequestShape,
    prefixes: Mapping[uuid.UUID, Prefix],
) -> Job | None:
    """Queue the request's approximate job over every sequence whose chain it cut: the valid
    prefix 1..k-1 followed by the layers it invalidated at k..L. None when there is none.
    ``prefixes``: the valid prefixes of the deletion's shards after it, by sequence."""
    invalidated: dict[uuid.UUID, list[InvalidatedLayer]] = defaultdict(list)
    for layer in deactivation.invalidated:
        invalidated[layer.sequence_id].append(layer)
    passes = []
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
            passes.append({"sequence_id": str(sequence_id), "from_stage": first, "chain": chain})
            sizes[prefixes[sequence_id].shard_index] = run[-1].trained_sample_count
    if not passes:
        return None
    share = len(deactivation.deleted_sample_ids) / max(1, sum(sizes.values()))
    chosen, why = resolve_method(model, method, shape, share)
    job, _ = JobRepository.from_session(session).create(
        look_up=False,
        model_id=model.id,
        kind=JobKind.approximate,
        stages_total=len(passes),
        params={
            "deletion_id": str(request.id),
            "method": chosen.value,
            "method_reason": why,
            "sequences": passes,
        },
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


@dataclass(frozen=True)
class PassWork:
    job_id: uuid.UUID
    model_id: uuid.UUID
    request_id: uuid.UUID
    spec: ModelSpec | None  # None when every sequence was passed over
    method: str
    method_reason: str
    sequences: list[SequencePass]
    skipped: list[str] = field(default_factory=list)  # why a sequence was passed over


def read_pass(session: Session, job: Job) -> PassWork:
    """Everything the job's passes need; the request's payloads are purged once read."""
    deletions = DeletionRepository.from_session(session)
    request = deletions.get(uuid.UUID(job.params["deletion_id"]))
    model = ModelRepository.from_session(session).get(job.model_id)
    sample_ids = deletions.deleted_sample_ids(request.id)
    rows = SampleRepository.from_session(session).payloads_of(sample_ids)
    sequences: list[SequencePass] = []
    skipped: list[str] = []
    spec: ModelSpec | None = None
    if not rows:
        skipped.append("the payloads were purged before the pass could read them")
    for planned in job.params["sequences"] if rows else []:
        sequence = session.get_one(SliceSequence, uuid.UUID(planned["sequence_id"]))
        from_stage, chain = int(planned["from_stage"]), [int(i) for i in planned["chain"]]
        # The versions first, as a retrain reads them: a deletion after this read makes the
        # pass's layers stale (discarded), never current with a sample it did not unlearn.
        versions = LineageRepository.from_session(session).shard_versions(sequence.shard_id)
        reason = _chain_changed(session, job.model_id, sequence, from_stage, chain, versions, rows)
        if reason:
            skipped.append(f"sequence {sequence.index} of its shard: {reason}")
            continue
        cached = StatisticsRepository.from_session(session).of(chain[-1])
        statistics = cached if cached and Method(job.params["method"]) in READS_STATISTICS else None
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
            )
        )
    lifecycle.purge_payloads(session, request, reason="read by the approximate pass")
    return PassWork(
        job_id=job.id,
        model_id=job.model_id,
        request_id=request.id,
        spec=spec,
        method=str(job.params["method"]),
        method_reason=str(job.params.get("method_reason", "")),
        sequences=sequences,
        skipped=skipped,
    )


def record_pass(
    session: Session, work: PassWork, sequence: SequencePass, artifacts: list[str]
) -> Activation:
    """Record one sequence's edited stages as approximate layers and serve them if their chain
    is still current; call with the model row locked."""
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
    activation = lineage.activate(work.model_id, layer_ids)
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


def purge_overdue(session: Session, *, limit: int = 100) -> int:
    """Purge the payloads whose approximate pass did not read them by the deadline; their
    deletions become exact-only. Returns how many requests were purged."""
    overdue = DeletionRepository.from_session(session).overdue_purges(utcnow(), limit=limit)
    for request in overdue:
        lifecycle.purge_payloads(session, request, reason="deadline")
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
