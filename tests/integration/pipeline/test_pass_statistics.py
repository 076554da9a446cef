"""The pass statistics in the service (SQLite and PostgreSQL, jobs run in this process).

Training under an approximate policy stores each chain's statistics (`layer_statistics`, an
artifact); a pass reads them instead of the shard, and the layers it serves are bitwise those of
the same method computing the statistics from the chain's training data. They belong to their
chain's top layer: a retrain stores new ones, housekeeping deletes the old ones (row and
artifact) once their layer is superseded, and a pass never reads another chain's.
"""

from __future__ import annotations

import logging
import uuid
from types import SimpleNamespace
from typing import Any, cast

import pytest
import sqlalchemy as sa

from service.db.models import Job, JobKind, Layer, LayerState, LayerStatistics
from service.db.repositories import StatisticsRepository
from service.housekeeping import housekeep
from service.settings import Settings
from service.training.runner import keep_statistics
from service.training.service import SequenceJob, read_sequence_job
from tests.integration.api import (
    Api,
    InProcessWorker,
    active_digests,
    samples,
    trained_model,
    trained_without,
)
from unlearning.approx.prefix_pass import (
    approximate_stages,
    chain_statistics,
    examples_of,
)
from unlearning.artifacts import artifact_ref
from unlearning.s3t import S3TEngine
from unlearning.sharding import assign

pytestmark = pytest.mark.integration
N_SAMPLES = 24
APPROXIMATE = {"unlearning_policy": "approximate_then_exact", "approximate_method": "ssd"}


def _statistics(worker: InProcessWorker) -> dict[int, str]:
    """Layer id -> artifact of every stored statistics row."""
    with worker.factory() as session:
        rows = session.scalars(sa.select(LayerStatistics)).all()
        return {row.layer_id: row.artifact_ref for row in rows}


def _tops(worker: InProcessWorker) -> dict[uuid.UUID, int]:
    """Sequence -> its active top-stage layer."""
    with worker.factory() as session:
        rows = session.execute(
            sa.select(Layer.sequence_id, Layer.id).where(
                Layer.state == LayerState.active, Layer.position == 2
            )
        )
        return dict(rows.all())


def _approximate_job(worker: InProcessWorker) -> dict[str, Any]:
    with worker.factory() as session:
        job = session.scalars(
            sa.select(Job).where(Job.kind == JobKind.approximate).order_by(Job.created_at.desc())
        ).first()
        assert job is not None
        return dict(job.params)


def test_training_stores_the_statistics_of_each_chain_under_an_approximate_policy(
    api: Api, worker: InProcessWorker
) -> None:
    trained_model(api, worker, samples(N_SAMPLES))  # policy `exact`: none
    assert _statistics(worker) == {}
    trained_model(api, worker, samples(N_SAMPLES), APPROXIMATE)
    tops = _tops(worker)
    stored = _statistics(worker)
    assert len(stored) == 4 and set(stored) <= set(tops.values())
    assert all(worker.engine.store.exists(ref) for ref in stored.values())


def test_a_pass_with_the_statistics_is_bitwise_the_pass_from_the_data(
    api: Api, worker: InProcessWorker
) -> None:
    rows = samples(N_SAMPLES)
    model_id = trained_model(api, worker, rows, APPROXIMATE)
    gone = ["s003", "s010"]
    # What the chains were trained on, in the training job's order, before the deletion.
    with worker.factory() as session:
        trained = {
            sequence_id: read_sequence_job(session, sequence_id, 1).samples
            for sequence_id in _tops(worker)
        }
    deletion = api.ok(api.delete(model_id, sample_ids=gone), 202)
    params = _approximate_job(worker)
    engine, backbone = worker.engine, worker.engine.backbone
    # The chains and their statistics as the pass reads them (collected once it has run).
    with worker.factory() as session:
        read = {}
        for planned in params["sequences"]:
            chain = [int(i) for i in planned["chain"]]
            stored = StatisticsRepository.from_session(session).of(chain[-1])
            assert stored is not None
            refs = dict(
                session.execute(
                    sa.select(Layer.id, Layer.artifact_ref).where(Layer.id.in_(chain))
                ).all()
            )
            stages = [engine.load_stage(refs[i] or "") for i in chain]
            read[planned["sequence_id"]] = (stored.artifact_ref, stages)
    assert worker.approximate() == 1
    assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "approximated"

    audit = api.ok(api.get(f"/models/{model_id}/audit"))["entries"]
    served = [e["payload"] for e in audit if e["action"] == "layers.approximated"]
    assert served and all(p["statistics"] for p in served), "the pass read the statistics"
    with worker.factory() as session:
        for planned in params["sequences"]:
            sequence_id = uuid.UUID(planned["sequence_id"])
            statistics_ref, stages = read[planned["sequence_id"]]
            config = read_sequence_job(session, sequence_id, 1).spec.config
            data = trained[sequence_id]
            forget = [s for s in data if s.id in gone]
            expected = approximate_stages(
                backbone,
                config,
                stages,
                int(planned["from_stage"]) - 1,
                examples_of(backbone, config, forget),
                None,
                params["method"],
                statistics=chain_statistics(backbone, config, stages, data),
            )
            payload = next(p for p in served if p["statistics"] == statistics_ref)
            activated = [layer["artifact"] for layer in payload["activated"]]
            assert activated == [artifact_ref(w.to_bytes()) for w in expected]


def test_statistics_follow_their_layers_and_are_collected(
    api: Api, worker: InProcessWorker, settings: Settings
) -> None:
    model_id = trained_model(api, worker, samples(N_SAMPLES), APPROXIMATE)
    before = _statistics(worker)
    api.ok(api.delete(model_id, sample_ids=["s003"]), 202)
    worker.approximate()
    worker.drain()  # the exact retrains store their chains' statistics
    after = _statistics(worker)
    tops = set(_tops(worker).values())
    assert set(after) - set(before) and (set(after) - set(before)) <= tops
    housekeep(worker.factory, settings)
    kept = _statistics(worker)
    assert set(kept) == tops, "only the served chains' statistics are left"
    superseded = set(before) - tops
    assert superseded, "the retrained chains' old statistics"
    gone = {before[layer] for layer in superseded} - set(kept.values())
    assert gone and not any(worker.engine.store.exists(ref) for ref in gone)

    # The next pass reads the new chain's statistics, never the collected ones.
    second = api.ok(api.delete(model_id, sample_ids=["s010"]), 202)
    params = _approximate_job(worker)
    assert worker.approximate() == 1
    audit = api.ok(api.get(f"/models/{model_id}/audit"))["entries"]
    used = {
        e["payload"]["statistics"]
        for e in audit
        if e["action"] == "layers.approximated" and e["payload"]["deletion_id"] == second["id"]
    }
    latest = {kept[int(p["chain"][-1])] for p in params["sequences"]}
    assert latest <= used and not (used & gone)


def test_a_pass_without_statistics_computes_them_from_the_data(
    api: Api, worker: InProcessWorker
) -> None:
    """A chain with none (lost, or trained under `exact`): the pass reads the shard."""
    model_id = trained_model(api, worker, samples(N_SAMPLES))  # `exact`: none stored
    deletion = api.ok(api.delete(model_id, sample_ids=["s003"], method="ssd"), 202)
    assert worker.approximate() == 1
    assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "approximated"
    audit = api.ok(api.get(f"/models/{model_id}/audit"))["entries"]
    assert [e["payload"]["statistics"] for e in audit if e["action"] == "layers.approximated"]
    assert all(
        e["payload"]["statistics"] is None for e in audit if e["action"] == "layers.approximated"
    )


def test_statistics_are_never_read_across_slice_versions(api: Api, worker: InProcessWorker) -> None:
    """A second deletion on the same slices before the first one's pass: the chain's data is no
    longer the first forget set plus what remains, so that pass leaves the chain to the exact
    retrain and reads no statistics (nor does the second: its chain is already cut)."""
    rows = samples(N_SAMPLES)
    model_id = trained_model(api, worker, rows, {**APPROXIMATE, "placement": "sample"})
    model = api.ok(api.get(f"/models/{model_id}"))
    shard_of = {r["external_id"]: assign(model_id, r["external_id"], 2, 2) for r in rows}
    first = "s003"
    second = next(
        e for e, placed in shard_of.items() if e != first and placed == shard_of[first]
    )  # the same shard and slice
    one = api.ok(api.delete(model_id, sample_ids=[first]), 202)
    two = api.ok(api.delete(model_id, sample_ids=[second]), 202)
    worker.approximate()
    jobs = [api.ok(api.get(f"/jobs/{j}")) for d in (one, two) for j in d["jobs"]]
    passes = [j for j in jobs if j["kind"] == "approximate"]
    assert passes and all(j["status"] == "cancelled" for j in passes), passes
    assert any("another deletion also touched" in (j["error"] or "") for j in passes)
    audit = api.ok(api.get(f"/models/{model_id}/audit"))["entries"]
    assert not [e for e in audit if e["action"] == "layers.approximated"]
    worker.drain()
    assert active_digests(worker, model_id) == trained_without(
        worker.engine, model, rows, {first, second}
    )


def test_an_empty_shard_has_no_statistics_to_store(caplog: pytest.LogCaptureFixture) -> None:
    """A shard the placement left empty (a subject-placed model with few subjects) trains on
    nothing: there are no statistics to compute, and no error to log."""

    def no_transaction() -> Any:
        raise AssertionError("nothing to store")

    work = cast(SequenceJob, SimpleNamespace(samples=[], prefix=[]))
    with caplog.at_level(logging.WARNING):
        keep_statistics(no_transaction, cast(S3TEngine, None), work, [], top=1)
    assert not caplog.records
