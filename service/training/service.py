"""What a training job reads from the lineage database, and what it records back.

A job runs in three steps so that no transaction stays open while the engine trains:

1. :func:`read_sequence_job` (one transaction): the versions of the shard's slices, then its
   live samples and payloads, and the saved valid prefix;
2. ``S3TEngine.retrain`` (no database);
3. :func:`record_layers`: the trained stages as ``training`` layers carrying the snapshot, then
   ``LineageRepository.activate``, which serves them only if those versions are still current;
   a deletion that landed meanwhile gets them discarded, never served. The job runner does these
   in two transactions (only the second locks the model); :func:`record_sequence` does both in
   one.

Functions here flush and never commit: the job's boundary does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy.orm import Session

from service.db.models import Shard, SliceSequence, UnlearningPolicy
from service.db.repositories import LineageRepository, ModelRepository, SampleRepository
from service.db.repositories.lineage import Activation
from service.engine import BaseModelKey, model_spec, training_sample
from service.errors import LineageError
from unlearning.s3t import ModelSpec, SequenceKey, TrainedLayer, TrainingSample


@dataclass(frozen=True)
class SequenceJob:
    model_id: uuid.UUID
    sequence_id: uuid.UUID
    spec: ModelSpec
    key: SequenceKey
    from_stage: int
    samples: list[TrainingSample]
    stage_versions: dict[int, dict[uuid.UUID, int]]  # stage -> versions of π1..π_stage
    prefix: list[str]  # artifact references of the active stages 1..from_stage-1
    parent_layer_id: int | None
    base: BaseModelKey  # the base model the sequence trains on
    prefix_layer_ids: tuple[int, ...] = ()  # the layers of ``prefix``
    keep_statistics: bool = False  # the model may get approximate passes: store their statistics


def slice_indices(session: Session, sequence: SliceSequence) -> dict[uuid.UUID, int]:
    """Slice id -> slice index, for the slices of a sequence's shard."""
    slice_ids = LineageRepository.from_session(session).prefix_slice_ids(
        sequence, len(sequence.slice_order)
    )
    return dict(zip(slice_ids, sequence.slice_order, strict=True))


def read_sequence_job(
    session: Session, sequence_id: uuid.UUID, from_stage: int, *, with_samples: bool = True
) -> SequenceJob:
    """Everything needed to (re)train stages ``from_stage..L`` of one sequence (without its
    samples when the caller needs none)."""
    sequence = session.get(SliceSequence, sequence_id)
    if sequence is None:
        raise LineageError(f"no sequence {sequence_id}")
    shard = session.get_one(Shard, sequence.shard_id)
    models = ModelRepository.from_session(session)
    model = models.get(shard.model_id)
    orders = [s.slice_order for s in models.sequences(model.id) if s.shard_id == shard.id]
    spec = model_spec(model, orders)
    if not 1 <= from_stage <= model.n_slices:
        raise LineageError(f"stage {from_stage} is not in 1..{model.n_slices}")

    lineage = LineageRepository.from_session(session)
    slice_ids = lineage.prefix_slice_ids(sequence, model.n_slices)
    versions = lineage.snapshot(slice_ids)  # before the data: see service.training.runner
    index_of: dict[uuid.UUID | None, int] = dict(zip(slice_ids, sequence.slice_order, strict=True))
    samples = (
        [
            training_sample(model, sample, payload, shard.index, index_of[sample.slice_id])
            for sample, payload in SampleRepository.from_session(session).training_set(slice_ids)
        ]
        if with_samples
        else []
    )
    prefix_layers = lineage.active_stages(sequence.id, from_stage - 1)
    return SequenceJob(
        model_id=model.id,
        sequence_id=sequence.id,
        spec=spec,
        key=SequenceKey(shard.index, sequence.index),
        from_stage=from_stage,
        samples=samples,
        stage_versions={
            stage: {sid: versions[sid] for sid in slice_ids[:stage]}
            for stage in range(from_stage, model.n_slices + 1)
        },
        prefix=[layer.artifact_ref or "" for layer in prefix_layers],
        parent_layer_id=prefix_layers[-1].id if prefix_layers else None,
        base=BaseModelKey.of(model.base_model),
        prefix_layer_ids=tuple(layer.id for layer in prefix_layers),
        keep_statistics=model.unlearning_policy is not UnlearningPolicy.exact,
    )


class NewLayer(NamedTuple):
    """One stage to record: its position, its artifact and the samples it was trained on."""

    position: int
    artifact: str
    sample_count: int


def record_chain(
    session: Session,
    sequence_id: uuid.UUID,
    parent_layer_id: int | None,
    stages: Iterable[NewLayer],
    stage_versions: Mapping[int, Mapping[uuid.UUID, int]],
    job_id: uuid.UUID | None,
    *,
    approximate: bool = False,
) -> list[int]:
    """Record consecutive stages of a sequence as layers (state ``training``, invisible to
    serving), each the child of the one before, the first of ``parent_layer_id``, each with the
    slice versions its data was read at; returns their ids, in order. Training and approximate
    passes both record through here."""
    lineage = LineageRepository.from_session(session)
    sequence = session.get_one(SliceSequence, sequence_id)
    parent = parent_layer_id
    layer_ids = []
    for stage in stages:
        row = lineage.record_layer(
            sequence=sequence,
            position=stage.position,
            slice_versions=stage_versions[stage.position],
            parent_layer_id=parent,
            artifact_ref=stage.artifact,
            artifact_digest=stage.artifact.removeprefix("sha256:"),
            trained_sample_count=stage.sample_count,
            job_id=job_id,
            approximate=approximate,
        )
        parent = row.id
        layer_ids.append(row.id)
    return layer_ids


def record_layers(
    session: Session,
    job: SequenceJob,
    trained: Sequence[TrainedLayer],
    job_id: uuid.UUID | None = None,
) -> list[int]:
    """Record the trained stages as layers (state ``training``, invisible to serving) with the
    job's snapshot; returns their ids, stage order."""
    stages = sorted(trained, key=lambda layer: layer.stage)
    expected = list(range(job.from_stage, job.spec.config.n_slices + 1))
    if [layer.stage for layer in stages] != expected:
        raise LineageError(f"a job from stage {job.from_stage} must record stages {expected}")
    return record_chain(
        session,
        job.sequence_id,
        job.parent_layer_id,
        [NewLayer(layer.stage, layer.artifact, layer.sample_count) for layer in stages],
        job.stage_versions,
        job_id,
    )


def record_sequence(
    session: Session,
    job: SequenceJob,
    trained: Sequence[TrainedLayer],
    job_id: uuid.UUID | None = None,
) -> Activation:
    """Record the trained stages and activate what is still valid, in one transaction."""
    layer_ids = record_layers(session, job, trained, job_id)
    return LineageRepository.from_session(session).activate(job.model_id, layer_ids)
