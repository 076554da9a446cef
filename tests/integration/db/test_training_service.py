"""The real engine on the lineage database: train, delete, retrain equals training without."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.models import (
    Layer,
    LayerState,
    Model,
    Sample,
    Shard,
    SliceSequence,
    Task,
    Tenant,
)
from service.db.repositories import (
    LineageRepository,
    ModelRepository,
    NewSample,
    SampleRepository,
)
from service.db.repositories.lineage import Activation
from service.errors import LineageError
from service.training.service import read_sequence_job, record_sequence
from tests.conftest import default_base_model_id
from tests.tiny_models import TINY_SETTINGS, tiny_backbone
from unlearning.artifacts import LocalArtifactStore
from unlearning.device import local_profile
from unlearning.s3t import S3TEngine
from unlearning.s3t.sequences import cyclic_sequences

pytestmark = pytest.mark.integration

LABELS = ["business", "sports", "tech"]
WORDS = [["stocks", "bank", "trade"], ["goal", "team", "cup"], ["chip", "space", "software"]]


@pytest.fixture
def engine(tmp_path: Path) -> S3TEngine:
    return S3TEngine(tiny_backbone(4), LocalArtifactStore(tmp_path / "artifacts"))


def _model(session: Session, tenant: Tenant, name: str) -> Model:
    model = ModelRepository.from_session(session).create(
        tenant_id=tenant.id,
        name=name,
        task=Task.classification,
        n_shards=2,
        n_slices=3,
        budget=2,
        sequence_orders=cyclic_sequences(3, 2),
        compute_profile=local_profile("cpu"),
        base_model_id=default_base_model_id(session),
        labels=LABELS,
        config=dict(TINY_SETTINGS),
    )
    rows = [
        NewSample(f"u{i:03d}", LABELS[i % 3], text=f"{WORDS[i % 3][i % 2]} story {i}")
        for i in range(48)
    ]
    SampleRepository.from_session(session).add_many(model, rows)
    return model


def _sequences(session: Session, model: Model) -> list[SliceSequence]:
    return ModelRepository.from_session(session).sequences(model.id)


def _train(
    session: Session, engine: S3TEngine, sequence: SliceSequence, from_stage: int = 1
) -> Activation:
    job = read_sequence_job(session, sequence.id, from_stage)
    trained = engine.retrain(job.spec, job.key, from_stage, job.samples, job.prefix)
    return record_sequence(session, job, trained)


def _layer_keys(
    session: Session, *where: sa.ColumnElement[bool]
) -> dict[tuple[int, int, int], str | None]:
    """(shard, sequence, stage) -> artifact of the layers matching ``where``."""
    rows = session.execute(
        sa.select(Shard.index, SliceSequence.index, Layer.position, Layer.artifact_ref)
        .join(SliceSequence, Layer.sequence_id == SliceSequence.id)
        .join(Shard, SliceSequence.shard_id == Shard.id)
        .where(*where)
    ).all()
    return {(shard, seq, pos): ref for shard, seq, pos, ref in rows}


def _served(session: Session, model: Model) -> dict[tuple[int, int, int], str | None]:
    return _layer_keys(session, Shard.model_id == model.id, Layer.state == LayerState.active)


def test_retraining_after_a_deletion_equals_training_without_the_samples(
    session: Session, tenant: Tenant, engine: S3TEngine
) -> None:
    model = _model(session, tenant, "m")
    for sequence in _sequences(session, model):
        assert _train(session, engine, sequence).activated_layer_ids
    before = _served(session, model)
    assert len(before) == 2 * 2 * 3

    victims = session.scalars(
        sa.select(Sample.id).where(
            Sample.model_id == model.id, Sample.external_id.in_(["u005", "u017"])
        )
    ).all()
    assert len(victims) == 2
    lineage = LineageRepository.from_session(session)
    deactivation = lineage.deactivate_samples(model.id, victims)
    assert deactivation.invalidated_layer_ids
    for sequence_id, first in deactivation.first_invalid_position.items():
        sequence = session.get_one(SliceSequence, sequence_id)
        activation = _train(session, engine, sequence, first)
        assert len(activation.activated_layer_ids) == 3 - first + 1

    # The same data minus the two samples, trained from scratch as another model of the tenant
    # (same placement: the placement hashes the model id, so compare per shard/slice contents).
    after = _served(session, model)
    invalidated = _layer_keys(session, Layer.id.in_(deactivation.invalidated_layer_ids))
    for key, ref in before.items():
        assert (after[key] == ref) == (key not in invalidated)
    fresh = _fresh_training(session, engine, model, deleted={"u005", "u017"})
    assert after == fresh


def _fresh_training(
    session: Session, engine: S3TEngine, model: Model, deleted: set[str]
) -> dict[tuple[int, int, int], str | None]:
    """Train the model's spec from scratch on its samples without ``deleted`` (engine only)."""
    jobs = [read_sequence_job(session, s.id, 1) for s in _sequences(session, model)]
    everything = {sample.id: sample for job in jobs for sample in job.samples}
    assert not deleted & set(everything)  # the jobs already read only live samples
    layers = engine.train(jobs[0].spec, list(everything.values()))
    return {(x.shard, x.sequence, x.stage): x.artifact for x in layers}


def test_a_deletion_during_a_retrain_discards_its_stale_result(
    session: Session, tenant: Tenant, engine: S3TEngine
) -> None:
    model = _model(session, tenant, "m")
    sequences = _sequences(session, model)
    for sequence in sequences:
        _train(session, engine, sequence)
    sequence = sequences[0]
    job = read_sequence_job(session, sequence.id, 1)
    trained = engine.retrain(job.spec, job.key, 1, job.samples, job.prefix)
    first_slice = LineageRepository.from_session(session).prefix_slice_ids(sequence, 1)[0]
    victim = session.scalars(sa.select(Sample).where(Sample.slice_id == first_slice).limit(1)).one()
    LineageRepository.from_session(session).deactivate_samples(model.id, [victim.id])
    activation = record_sequence(session, job, trained)
    assert not activation.activated_layer_ids
    assert len(activation.discarded_layer_ids) == 3


def test_a_retrain_needs_the_valid_prefix(session: Session, tenant: Tenant) -> None:
    model = _model(session, tenant, "m")
    with pytest.raises(LineageError, match=r"no active, stored stages 1\.\.1"):
        read_sequence_job(session, _sequences(session, model)[0].id, 2)
