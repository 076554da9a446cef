"""The training job runner with real commits: job state, activation, failures, redelivery."""

from __future__ import annotations

import functools
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from service.db.engine import unit_of_work
from service.db.models import Job, JobKind, JobStatus, Layer, LayerState, Task
from service.db.repositories import (
    JobRepository,
    ModelRepository,
    NewSample,
    SampleRepository,
    TenantRepository,
)
from service.jobs.runner import Transaction
from service.training.runner import run_sequence_job
from tests.conftest import default_base_model_id
from tests.tiny_models import TINY_SETTINGS, tiny_backbone
from unlearning.artifacts import LocalArtifactStore
from unlearning.device import local_profile
from unlearning.s3t import S3TEngine, TrainedLayer

pytestmark = pytest.mark.integration


def _transaction(factory: sessionmaker[Session]) -> Transaction:
    return functools.partial(unit_of_work, factory)


def _model_with_jobs(factory: sessionmaker[Session], from_stage: int = 1) -> list[uuid.UUID]:
    with unit_of_work(factory) as session:
        tenant = TenantRepository.from_session(session).create("t")
        model = ModelRepository.from_session(session).create(
            tenant_id=tenant.id,
            name="m",
            task=Task.classification,
            n_shards=1,
            n_slices=2,
            budget=2,
            sequence_orders=[[0, 1], [1, 0]],
            compute_profile=local_profile("cpu"),
            base_model_id=default_base_model_id(session),
            labels=["a", "b"],
            config=dict(TINY_SETTINGS),
        )
        SampleRepository.from_session(session).add_many(
            model, [NewSample(f"x{i}", "ab"[i % 2], text=f"word{i % 2} {i}") for i in range(16)]
        )
        jobs = JobRepository.from_session(session)
        return [
            jobs.create(
                model_id=model.id,
                kind=JobKind.train,
                stages_total=0,
                sequence_id=sequence.id,
                from_stage=from_stage,
            )[0].id
            for sequence in ModelRepository.from_session(session).sequences(model.id)
        ]


def test_a_job_trains_records_and_activates_its_stages(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    engine = S3TEngine(tiny_backbone(4), LocalArtifactStore(tmp_path))
    job_ids = _model_with_jobs(factory)
    for job_id in job_ids:
        outcome = run_sequence_job(_transaction(factory), engine, job_id)
        assert outcome is not None and len(outcome.activation.activated_layer_ids) == 2
    with factory() as session:
        jobs = [session.get_one(Job, job_id) for job_id in job_ids]
        assert [(j.status, j.stages_done, j.stages_total) for j in jobs] == [
            (JobStatus.succeeded, 2, 2)
        ] * 2
        layers = session.scalars(sa.select(Layer)).all()
        assert {layer.state for layer in layers} == {LayerState.active}
        assert all(engine.store.exists(layer.artifact_ref or "") for layer in layers)
    # A redelivered message for a finished job changes nothing.
    assert run_sequence_job(_transaction(factory), engine, job_ids[0]) is None


class _BrokenEngine(S3TEngine):
    def retrain(self, *args: object, **kwargs: object) -> list[TrainedLayer]:
        raise RuntimeError("the GPU fell over")


def test_a_failing_job_is_recorded_as_failed(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    engine = _BrokenEngine(tiny_backbone(4), LocalArtifactStore(tmp_path))
    job_id = _model_with_jobs(factory)[0]
    with pytest.raises(RuntimeError):
        run_sequence_job(_transaction(factory), engine, job_id)
    with factory() as session:
        job = session.get_one(Job, job_id)
        assert job.status is JobStatus.failed
        assert job.error == "RuntimeError: the GPU fell over"
        assert job.dedup_key is None


def test_a_job_starts_no_later_than_the_valid_prefix(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """A job asked to resume at stage 2 of a sequence with no valid stage 1 trains from 1."""
    engine = S3TEngine(tiny_backbone(4), LocalArtifactStore(tmp_path))
    job_id = _model_with_jobs(factory, from_stage=2)[0]
    outcome = run_sequence_job(_transaction(factory), engine, job_id)
    assert outcome is not None and len(outcome.activation.activated_layer_ids) == 2
    with factory() as session:
        job = session.get_one(Job, job_id)
        assert (job.from_stage, job.stages_done, job.stages_total) == (1, 2, 2)


class _RacedEngine(S3TEngine):
    """Its first retrain's artifacts vanish right after it wrote them: a collector deleted equal
    bytes that only dead layers named, after this job's write found them stored."""

    runs = 0

    def retrain(self, *args: Any, **kwargs: Any) -> list[TrainedLayer]:
        trained = super().retrain(*args, **kwargs)
        self.runs += 1
        if self.runs == 1:
            for layer in trained:
                self.store.delete(layer.artifact)
        return trained


def test_a_job_whose_artifacts_were_collected_as_it_wrote_them_trains_again(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    engine = _RacedEngine(tiny_backbone(4), LocalArtifactStore(tmp_path))
    job_id = _model_with_jobs(factory)[0]
    outcome = run_sequence_job(_transaction(factory), engine, job_id)
    assert engine.runs == 2, "the claim saw the files gone before naming them"
    assert outcome is not None and len(outcome.activation.activated_layer_ids) == 2
    with factory() as session:
        assert session.get_one(Job, job_id).status is JobStatus.succeeded
        layers = session.scalars(sa.select(Layer)).all()
        assert len(layers) == 2 and all(engine.store.exists(x.artifact_ref or "") for x in layers)
