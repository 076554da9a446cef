"""A deletion's weights leave the store and serving memory, and its certificate says so."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.db.models import Layer, LayerState, LayerStatistics
from service.engine import artifact_store
from service.housekeeping import housekeep
from service.serving.registry import ServingRegistry
from service.settings import Settings
from tests.integration.api import Api, InProcessWorker, samples, trained_model

pytestmark = pytest.mark.integration
N_SAMPLES = 24


def stored(settings: Settings) -> set[str]:
    """The references of every file in the artifact store."""
    assert settings.artifacts_dir is not None
    return {
        f"sha256:{path.name}" for path in Path(settings.artifacts_dir).rglob("*") if path.is_file()
    }


def live(worker: InProcessWorker) -> set[str]:
    """What the store may hold: active layers' artifacts and pass statistics."""
    with worker.factory() as session:
        layers = session.scalars(
            sa.select(Layer.artifact_ref).where(Layer.state == LayerState.active)
        )
        statistics = session.scalars(sa.select(LayerStatistics.artifact_ref))
        return {ref for ref in [*layers, *statistics] if ref}


def invalidated(worker: InProcessWorker) -> set[str]:
    with worker.factory() as session:
        return {
            ref or ""
            for ref in session.scalars(
                sa.select(Layer.artifact_ref).where(Layer.state == LayerState.invalidated)
            )
        }


def test_a_completed_deletion_leaves_only_live_artifacts_and_certifies_it(
    api: Api, worker: InProcessWorker, settings: Settings
) -> None:
    model_id = trained_model(api, worker, samples(N_SAMPLES))
    deletion = api.ok(api.delete(model_id, sample_ids=["s003"]), 202)
    assert worker.drain() >= 1  # each job is followed by a collection, as in a worker
    assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "completed"
    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    assert certificate["layers_invalidated"]
    assert certificate["invalidated_artifacts_deleted"] is True
    gone = {layer["artifact"] for layer in certificate["layers_invalidated"]}
    assert all(
        layer["artifact_deleted"] and layer["collected_at"] and not layer["artifact_in_use"]
        for layer in certificate["layers_invalidated"]
    )
    assert all(not layer["artifact_deleted"] for layer in certificate["layers_retrained"])
    assert gone <= set(worker.collected) and not gone & stored(settings)
    assert stored(settings) == live(worker)
    collected = [e for e in certificate["audit_entries"] if e["action"] == "artifacts.collected"]
    assert collected, "the removal is in the model's audit chain, linked to the deletion"
    audit = api.ok(api.get(f"/models/{model_id}/audit"))["entries"]
    named = {
        item["artifact"]
        for entry in audit
        if entry["action"] == "artifacts.collected"
        and deletion["id"] in entry["payload"]["deletion_ids"]
        for item in entry["payload"]["collected"]
    }
    assert gone <= named
    assert certificate["audit_chain_verified"]


def test_housekeeping_collects_without_a_worker(
    api: Api, worker: InProcessWorker, settings: Settings
) -> None:
    """An invalidated layer that no pass will edit goes at the next housekeeping, before its
    retrain runs; the certificate already says so."""
    model_id = trained_model(api, worker, samples(N_SAMPLES))
    deletion = api.ok(api.delete(model_id, sample_ids=["s003"]), 202)
    cut = invalidated(worker)
    assert cut and cut <= stored(settings)
    housekeep(worker.factory, settings)
    assert not cut & stored(settings)
    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    assert certificate["invalidated_artifacts_deleted"] is True


def _loaded(client: TestClient) -> set[str]:
    registry: ServingRegistry = client.app.state.serving  # type: ignore[attr-defined]
    return {ref for engine in registry.engines().engines() for ref in engine.loaded_stages}


def _predict(api: Api, model_id: str) -> Any:
    return api.ok(api.post(f"/models/{model_id}/predict", {"texts": ["good thing"]}))


def test_serving_drops_the_stages_it_no_longer_serves(
    api: Api, worker: InProcessWorker, client: TestClient
) -> None:
    """No pub/sub here: the next prediction reloads the model, which drops every stage that no
    held model serves."""
    model_id = trained_model(api, worker, samples(N_SAMPLES))
    _predict(api, model_id)
    before = _loaded(client)
    api.ok(api.delete(model_id, sample_ids=["s003"]), 202)
    cut = invalidated(worker)
    assert cut & before
    _predict(api, model_id)
    assert not _loaded(client) & cut
    worker.drain()
    _predict(api, model_id)
    assert _loaded(client) <= live(worker) and not _loaded(client) & cut


def test_an_announced_collection_drops_stages_before_the_next_prediction(
    api: Api, worker: InProcessWorker, client: TestClient
) -> None:
    model_id = trained_model(api, worker, samples(N_SAMPLES))
    _predict(api, model_id)
    api.ok(api.delete(model_id, sample_ids=["s003"]), 202)
    cut = invalidated(worker)
    assert cut & _loaded(client)
    registry: ServingRegistry = client.app.state.serving  # type: ignore[attr-defined]
    registry.evict(sorted(cut))  # what the pub/sub listener calls
    assert not _loaded(client) & cut
    assert _predict(api, model_id)["predictions"]


def test_housekeeping_sweeps_the_files_a_crashed_job_never_recorded(
    api: Api, worker: InProcessWorker, settings: Settings
) -> None:
    """A job that wrote weights (or began to) and died before recording them leaves files the
    database never knew: once older than `UNLEARN_ARTIFACT_SWEEP_GRACE_S` they are swept; a
    running job's fresh files, and every recorded artifact however old, stay."""
    trained_model(api, worker, samples(N_SAMPLES))
    root = Path(settings.artifacts_dir or "")
    store = artifact_store(settings)
    orphan = store.put(b"stage weights of a job that crashed before recording them")
    fresh = store.put(b"stage weights a running job has just written")
    partial = root / orphan.removeprefix("sha256:")[:2] / ".tmp-crashed-mid-write"
    partial.write_bytes(b"half of a stage")
    recorded = live(worker)
    old = time.time() - settings.artifact_sweep_grace_s - 60
    for path in root.rglob("*"):
        if path.is_file() and not path.name.endswith(fresh.removeprefix("sha256:")):
            os.utime(path, (old, old))

    housekeep(worker.factory, settings, sweeping=True)  # the API's housekeeper leads here

    kept = stored(settings)
    assert orphan not in kept, "the crashed job's file is still stored"
    assert not partial.exists(), "the unfinished write is still stored"
    assert fresh in kept, "a running job's fresh file was swept"
    assert recorded and recorded <= kept, "a recorded artifact was swept"
