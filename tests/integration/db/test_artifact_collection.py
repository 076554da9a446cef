"""Artifact collection on real commits: references are counted by artifact across every layer of
every model (equal bytes that a live row names stay), what live jobs will read stays, and a
failure or a crash part-way loses nothing valid and leaves nothing behind once a later pass ran.
"""

from __future__ import annotations

import functools
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from service.artifacts.collection import Transaction, claim, collect, collect_batch
from service.db.engine import unit_of_work
from service.db.models import (
    AuditEntry,
    CollectedArtifact,
    DeletionRequest,
    JobKind,
    JobStatus,
    Layer,
    LayerState,
    LayerStatistics,
    Model,
    SliceSequence,
    Task,
)
from service.db.models.base import utcnow
from service.db.models.job_params import ApproximateParams, PlannedSequence, SequenceParams
from service.db.repositories import (
    DeletionRepository,
    JobRepository,
    LineageRepository,
    ModelRepository,
    StatisticsRepository,
    TenantRepository,
)
from service.db.repositories.audit import audit_chain
from tests.conftest import default_base_model_id
from unlearning.artifacts import ArtifactNotFoundError, LocalArtifactStore, artifact_ref
from unlearning.device import local_profile

pytestmark = pytest.mark.integration


class FlakyStore(LocalArtifactStore):
    """A store that refuses to delete some references (a backend error)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.refuse: set[str] = set()

    def delete(self, ref: str) -> None:
        if ref in self.refuse:
            raise OSError(f"cannot delete {ref}")
        super().delete(ref)


@pytest.fixture
def store(tmp_path: Path) -> FlakyStore:
    return FlakyStore(tmp_path / "artifacts")


def _transaction(factory: sessionmaker[Session]) -> Transaction:
    return functools.partial(unit_of_work, factory)


def _model(session: Session, name: str = "m") -> Model:
    tenants = TenantRepository.from_session(session)
    tenant = tenants.create(f"{name}-{uuid.uuid4().hex[:6]}")
    return ModelRepository.from_session(session).create(
        tenant_id=tenant.id,
        name=name,
        task=Task.classification,
        n_shards=1,
        n_slices=2,
        budget=2,
        sequence_orders=[[0, 1], [1, 0]],
        compute_profile=local_profile("cpu"),
        base_model_id=default_base_model_id(session),
        labels=["a", "b"],
    )


def _sequences(session: Session, model: Model) -> list[SliceSequence]:
    return ModelRepository.from_session(session).sequences(model.id)


def _layer(
    session: Session,
    store: LocalArtifactStore,
    sequence: SliceSequence,
    position: int,
    data: bytes,
    state: LayerState,
    *,
    parent: Layer | None = None,
    job_id: uuid.UUID | None = None,
) -> Layer:
    """A layer whose artifact holds ``data`` (equal data: the same artifact)."""
    lineage = LineageRepository.from_session(session)
    slice_ids = lineage.prefix_slice_ids(sequence, position)
    layer = lineage.record_layer(
        sequence=sequence,
        position=position,
        slice_versions=lineage.snapshot(slice_ids),
        parent_layer_id=parent.id if parent else None,
        artifact_ref=store.put(data),
        job_id=job_id,
    )
    layer.state = state
    session.flush()
    return layer


def _marked(factory: sessionmaker[Session]) -> set[str]:
    with factory() as session:
        return set(session.scalars(sa.select(CollectedArtifact.artifact_ref)))


def _collections(factory: sessionmaker[Session], model_id: uuid.UUID) -> list[dict[str, Any]]:
    with factory() as session:
        return [
            entry.payload
            for entry in session.scalars(
                sa.select(AuditEntry)
                .where(
                    AuditEntry.chain == audit_chain(model_id),
                    AuditEntry.action == "artifacts.collected",
                )
                .order_by(AuditEntry.seq)
            )
        ]


def test_only_artifacts_no_live_layer_names_are_deleted(
    factory: sessionmaker[Session], store: FlakyStore
) -> None:
    """Equal bytes: the invalidated layer's artifact is the active layer's, so it stays."""
    with unit_of_work(factory) as session:
        model = _model(session)
        first, second = _sequences(session, model)
        served = _layer(session, store, first, 1, b"served", LayerState.active)
        cut = _layer(session, store, first, 2, b"cut", LayerState.invalidated, parent=served)
        old = _layer(session, store, second, 1, b"old", LayerState.superseded)
        again = _layer(session, store, second, 1, b"same bytes", LayerState.active)
        twin = _layer(
            session, store, second, 2, b"same bytes", LayerState.invalidated, parent=again
        )
        stale = _layer(session, store, second, 2, b"stale", LayerState.discarded, parent=again)
        request = _request(session, model)
        LineageRepository.from_session(session).link_invalidation([cut.id, twin.id], request.id)
        model_id, request_id = model.id, request.id
        refs = {
            layer.id: layer.artifact_ref or "" for layer in (served, cut, old, again, twin, stale)
        }

    deleted = collect(_transaction(factory), store)

    dead = {refs[cut.id], refs[old.id], refs[stale.id]}
    assert set(deleted) == dead == _marked(factory)
    assert not any(store.exists(ref) for ref in dead)
    assert store.exists(refs[served.id]) and store.exists(refs[twin.id])
    assert refs[twin.id] == refs[again.id]
    (payload,) = _collections(factory, model_id)
    assert {item["artifact"]: item["layer_ids"] for item in payload["collected"]} == {
        refs[cut.id]: [cut.id],
        refs[old.id]: [old.id],
        refs[stale.id]: [stale.id],
    }
    assert payload["deletion_ids"] == [str(request_id)]
    assert collect(_transaction(factory), store) == []  # nothing left, nothing audited twice
    assert len(_collections(factory, model_id)) == 1


def test_references_are_counted_across_models(
    factory: sessionmaker[Session], store: FlakyStore
) -> None:
    with unit_of_work(factory) as session:
        one, two = _model(session, "one"), _model(session, "two")
        gone = _layer(session, store, _sequences(session, one)[0], 1, b"x", LayerState.invalidated)
        live = _layer(session, store, _sequences(session, two)[0], 1, b"x", LayerState.active)
        ref, ids = gone.artifact_ref or "", (one.id, two.id, gone.id, live.id)
    assert collect(_transaction(factory), store) == [] and store.exists(ref)

    with unit_of_work(factory) as session:
        session.get_one(Layer, ids[3]).state = LayerState.invalidated
    assert collect(_transaction(factory), store) == [ref] and not store.exists(ref)
    for model_id, layer_id in ((ids[0], ids[2]), (ids[1], ids[3])):  # one entry in each chain
        (payload,) = _collections(factory, model_id)
        assert payload["collected"] == [
            {"artifact": ref, "layer_ids": [layer_id], "statistics_of": []}
        ]


def test_what_live_jobs_write_or_will_read_stays(
    factory: sessionmaker[Session], store: FlakyStore
) -> None:
    """A running job's `training` layers, the chains a live pass planned (and their statistics)
    and a running retrain's prefix stay; once the retrain finished and the pass has nothing
    left to read (its request's payloads purged), everything dead goes."""
    with unit_of_work(factory) as session:
        model = _model(session)
        first, second = _sequences(session, model)
        jobs = JobRepository.from_session(session)
        retrain, _ = jobs.create(
            model_id=model.id, kind=JobKind.retrain, stages_total=1, sequence_id=second.id
        )
        base = _layer(session, store, first, 1, b"base", LayerState.invalidated)
        top = _layer(session, store, first, 2, b"top", LayerState.invalidated, parent=base)
        output = _layer(
            session, store, second, 1, b"output", LayerState.training, job_id=retrain.id
        )
        prefix = _layer(session, store, second, 1, b"prefix", LayerState.invalidated)
        StatisticsRepository.from_session(session).record(top.id, store.put(b"statistics"), 8)
        request = _request(session, model)
        jobs.create(
            model_id=model.id,
            kind=JobKind.approximate,
            stages_total=1,
            params=ApproximateParams(
                deletion_id=request.id,
                method="ssd",
                sequences=[
                    PlannedSequence(
                        sequence_id=top.sequence_id, chain=[base.id, top.id], from_stage=1
                    )
                ],
            ).dump(),
        )
        jobs.start(retrain)
        retrain.params = SequenceParams(prefix=[prefix.id]).dump()
        kept = {layer.artifact_ref or "" for layer in (base, top, output, prefix)}
        retrain_id, request_id = retrain.id, request.id
    statistics = artifact_ref(b"statistics")
    assert collect(_transaction(factory), store) == []
    assert all(store.exists(ref) for ref in {*kept, statistics})

    with unit_of_work(factory) as session:
        jobs = JobRepository.from_session(session)
        jobs.finish(jobs.get(retrain_id), JobStatus.succeeded)
        session.get_one(DeletionRequest, request_id).payloads_purged_at = utcnow()
    deleted = collect(_transaction(factory), store)
    assert set(deleted) == {*kept, statistics}
    assert not any(store.exists(ref) for ref in deleted)
    with factory() as session:
        assert session.scalars(sa.select(LayerStatistics)).all() == []


def test_a_failed_deletion_is_retried_by_the_next_pass(
    factory: sessionmaker[Session], store: FlakyStore
) -> None:
    with unit_of_work(factory) as session:
        sequence = _sequences(session, _model(session))[0]
        refs = [
            _layer(session, store, sequence, 1, data, LayerState.superseded).artifact_ref or ""
            for data in (b"a", b"b")
        ]
    store.refuse = {refs[0]}
    assert collect(_transaction(factory), store) == [refs[1]]
    assert store.exists(refs[0]) and _marked(factory) == {refs[1]}
    store.refuse = set()
    assert collect(_transaction(factory), store) == [refs[0]]
    assert not store.exists(refs[0]) and _marked(factory) == set(refs)


def test_a_crash_before_the_commit_loses_nothing_and_the_next_pass_finishes(
    factory: sessionmaker[Session], store: FlakyStore
) -> None:
    """Files are deleted under the lock before the commit that records them: a crash after the
    deletions rolls the records back (the dead rows still name the artifacts), and the next
    pass records them; a crash after the commit has nothing left to do. Live files never go."""
    with unit_of_work(factory) as session:
        model = _model(session)
        first, second = _sequences(session, model)
        served = _layer(session, store, first, 1, b"served", LayerState.active)
        dead = [
            _layer(session, store, second, 1, data, LayerState.superseded).artifact_ref or ""
            for data in (b"a", b"b")
        ]
        model_id, live = model.id, served.artifact_ref or ""
    seen: list[str] = []

    def crash() -> None:
        with unit_of_work(factory) as session:
            seen.extend(collect_batch(session, store).deleted)
            raise RuntimeError("the process died before the commit")

    with pytest.raises(RuntimeError, match="died"):
        crash()
    assert seen == sorted(dead)
    assert not any(store.exists(ref) for ref in dead) and store.exists(live)
    assert _marked(factory) == set() and _collections(factory, model_id) == []

    assert collect(_transaction(factory), store) == sorted(dead)
    assert _marked(factory) == set(dead) and store.exists(live)
    (payload,) = _collections(factory, model_id)
    assert sorted(item["artifact"] for item in payload["collected"]) == sorted(dead)


def test_a_writer_claims_what_it_records(factory: sessionmaker[Session], store: FlakyStore) -> None:
    """A writer whose bytes were collected as it wrote them (its put found them stored) learns
    it before naming them; bytes written again are no longer collected."""
    with unit_of_work(factory) as session:
        sequence = _sequences(session, _model(session))[0]
        ref = _layer(session, store, sequence, 1, b"weights", LayerState.discarded).artifact_ref
        sequence_id = sequence.id
    assert ref is not None and collect(_transaction(factory), store) == [ref]

    with pytest.raises(ArtifactNotFoundError), unit_of_work(factory) as session:
        claim(session, store, [ref])
    assert _marked(factory) == {ref}

    with unit_of_work(factory) as session:  # a retrain on identical data writes them again
        claim(session, store, [store.put(b"weights")])
        sequence = session.get_one(SliceSequence, sequence_id)
        _layer(session, store, sequence, 1, b"weights", LayerState.active)
    assert _marked(factory) == set()
    assert collect(_transaction(factory), store) == [] and store.exists(ref)


def _request(session: Session, model: Model) -> DeletionRequest:
    hasher = TenantRepository.from_session(session).hasher(model.tenant_id)
    request = DeletionRepository.from_session(session).new(
        tenant_id=model.tenant_id, model_id=model.id, body="{}", hasher=hasher
    )
    session.flush()
    return request
