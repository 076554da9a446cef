"""The whole pipeline with a real Celery worker process on PostgreSQL and Redis.

The API runs in this process (its outbox relay sends to Redis, its listener takes the workers'
serving announcements); the worker is ``unlearn worker`` in a child process on the tiny
backbone. Register, train, predict, delete: `deactivated` in the 202, `completed` after the
worker's retrain, the retrained layers bitwise equal to training without the data.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.app import create_app
from service.cli import RUN_WORKERS
from service.db.engine import make_engine
from service.db.models import Layer, LayerState
from service.settings import Settings
from tests.integration.api import (
    TINY_MODEL,
    auth,
    issue_keys,
    recorded_placements,
    samples,
    trained_without,
    used_layers,
)
from tests.integration.services import wait_for
from tests.integration.stack import WorkerStack
from tests.tiny_models import tiny_backbone
from unlearning.artifacts import LocalArtifactStore
from unlearning.s3t import S3TEngine
from unlearning.sharding import assign

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("processes")]
TIMEOUT_S = 180


#: `make run`'s layout (two solo workers: approximate passes, training), and one worker for
#: both queues with two pool children that each build their engine after the fork (prefork: how
#: one GPU runs several sequence jobs at once; there the held retrains let the pass go first).
LAYOUTS = {
    "make-run": [("--queues", queues, "--name", name) for queues, name in RUN_WORKERS],
    "prefork": [("--pool", "prefork", "--concurrency", "2")],
}


@pytest.fixture(params=list(LAYOUTS))
def stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[TestClient, Settings]]:
    stack = WorkerStack(tmp_path)
    for options in LAYOUTS[request.param]:
        stack.worker(*options)
    try:
        with TestClient(create_app(stack.settings), raise_server_exceptions=False) as client:
            yield client, stack.settings
    finally:
        output = stack.close()
        assert "Traceback" not in output, output[-4000:]
        # The worker logs JSON records, those of a job's task with its job id.
        records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        assert any(r.get("job_id") and r["level"] == "info" for r in records), output[-4000:]


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def test_delete_with_a_real_worker(stack: tuple[TestClient, Settings]) -> None:
    client, settings = stack
    headers = auth(issue_keys(settings)["a"])
    policy = {"unlearning_policy": "approximate_then_exact"}  # both queues of the worker
    model = _ok(client.post("/models", json={**TINY_MODEL, **policy}, headers=headers), 201)
    model_id = model["id"]
    ids = [f"s{i:03d}" for i in range(24)]
    shards = {i: assign(model_id, ext, 2, 2)[0] for i, ext in enumerate(ids)}
    bob = [next(i for i, s in shards.items() if s == k) for k in (0, 1)]
    rows = samples(24, subjects=dict.fromkeys(bob, "bob"))
    _ok(client.post(f"/models/{model_id}/samples", json={"samples": rows}, headers=headers))
    job = _ok(client.post(f"/models/{model_id}/train", headers=headers), 202)

    def job_done() -> Any:
        body = _ok(client.get(job["job_url"], headers=headers))
        return body if body["status"] not in ("queued", "running") else None

    assert wait_for(job_done, TIMEOUT_S, "training")["status"] == "succeeded"
    predict = f"/models/{model_id}/predict"
    before = _ok(client.post(predict, json={"texts": ["good one"]}, headers=headers))

    victims = [ids[i] for i in range(24) if i not in bob][:2]
    body = {"model_id": model_id, "sample_ids": victims}
    key = {**headers, "Idempotency-Key": "delete-1"}
    deletion = _ok(client.post("/deletions", json=body, headers=key), 202)
    assert deletion["status"] == "deactivated"
    assert deletion["serving_generation"] > before["serving_generation"]
    after = _ok(client.post(predict, json={"texts": ["good one"]}, headers=headers))
    certificate = _ok(client.get(f"/deletions/{deletion['id']}/certificate", headers=headers))
    invalidated = {layer["layer_id"] for layer in certificate["layers_invalidated"]}
    assert invalidated and not used_layers(after) & invalidated
    assert _ok(client.post("/deletions", json=body, headers=key), 202)["id"] == deletion["id"]

    def finished(deletion_id: str) -> Any:
        body = _ok(client.get(f"/deletions/{deletion_id}", headers=headers))
        return body if body["status"] in ("completed", "failed") else None

    # One after the other: a pass edits only layers no other deletion touched since. The shard's
    # other orders follow the served one at once here (restore delay 0): the next deletion waits
    # for them too, or it would join a retrain already running instead of waiting for its pass.
    done = wait_for(functools.partial(finished, deletion["id"]), TIMEOUT_S, "the retrain")
    assert done["status"] == "completed", done
    status_url = f"/models/{model_id}/status"
    wait_for(
        lambda: _ok(client.get(status_url, headers=headers))["pending_retrains"] == 0,
        TIMEOUT_S,
        "the parked orders",
    )
    subject = _ok(
        client.post(
            "/deletions", json={"model_id": model_id, "subject_id": "bob"}, headers=headers
        ),
        202,
    )
    assert subject["counts"]["deleted"] == 2
    done = wait_for(functools.partial(finished, subject["id"]), TIMEOUT_S, "the retrain")
    assert done["status"] == "completed", done

    # The approximate passes ran on the `deletions` queue (served, or overtaken by the retrain)
    # and no payload of a deleted sample is left.
    def passes_done() -> Any:
        jobs = [
            _ok(client.get(f"/jobs/{j}", headers=headers))
            for d in (deletion, subject)
            for j in d["jobs"]
        ]
        passes = [j for j in jobs if j["kind"] == "approximate"]
        return passes if all(j["status"] not in ("queued", "running") for j in passes) else None

    # Each pass ran first and served: the request was `approximated` before its retrains
    # started, and its approximate layers were activated before the exact ones.
    passes = wait_for(passes_done, TIMEOUT_S, "the approximate passes")
    assert len(passes) == 2 and all(j["status"] == "succeeded" for j in passes), passes
    audit = _ok(client.get(f"/models/{model_id}/audit", headers=headers))["entries"]
    for d in (deletion, subject):
        done = _ok(client.get(f"/deletions/{d['id']}", headers=headers))
        assert done["approximated_at"] and done["retraining_at"], done
        assert done["approximated_at"] < done["retraining_at"] < done["completed_at"], done
        certificate = _ok(client.get(f"/deletions/{d['id']}/certificate", headers=headers))
        assert certificate["payloads_deleted"] and certificate["unlearning"] == "exact"
        assert certificate["layers_approximated"], "the pass served layers"
        retrains = {str(j) for j in d["jobs"]} - {p["id"] for p in passes}
        served = [
            e["seq"]
            for e in audit
            if e["action"] == "layers.approximated" and e["payload"]["deletion_id"] == d["id"]
        ]
        exact = [
            e["seq"]
            for e in audit
            if e["action"] == "layers.activated" and e["payload"]["job_id"] in retrains
        ]
        assert served and exact and max(served) < min(exact), (served, exact)

    # Once the parked orders followed (at once here: the stack's restore delay is 0), the
    # retrained model is bitwise the model trained without the deleted samples.
    def restored() -> bool:
        status = _ok(client.get(f"/models/{model_id}/status", headers=headers))
        return bool(status["pending_retrains"] == 0)

    wait_for(restored, TIMEOUT_S, "the parked orders")
    gone = set(victims) | {ids[i] for i in bob}
    reference = S3TEngine(tiny_backbone(4), LocalArtifactStore(Path(settings.data_dir) / "ref"))
    expected = trained_without(
        reference, model, rows, gone, placed=recorded_placements(settings.database_url, model_id)
    )
    engine = make_engine(settings.database_url)
    with engine.connect() as conn:
        active = set(
            conn.scalars(sa.select(Layer.artifact_ref).where(Layer.state == LayerState.active))
        )
    engine.dispose()
    assert active == expected

    # The worker announced the new layers; this process preloaded them without a request.
    status = _ok(client.get(f"/models/{model_id}/status", headers=headers))
    registry = client.app.state.serving  # type: ignore[attr-defined]
    wait_for(
        lambda: registry.held_generation(uuid.UUID(model_id)) == status["serving_generation"],
        30,
        "the serving announcement",
    )
    final = _ok(client.post(predict, json={"texts": ["good one"]}, headers=headers))
    assert final["serving_generation"] == status["serving_generation"]
    assert len(final["shards"]) == 2 and all(s["stages"] == 2 for s in final["shards"])


def test_completed_leaves_no_approximate_layer_with_real_workers(tmp_path: Path) -> None:
    """`make run`'s two worker processes, the parked orders' retrains an hour away (as in
    production, where they wait): the pass serves, the served orders' exact retrains land, the
    deletion is `completed`, and no approximate layer (all were edited from weights that saw
    the deleted samples) stays servable or stored, whichever order it sits in."""
    stack = WorkerStack(tmp_path, restore_after_s=3600)
    for queues, name in RUN_WORKERS:
        stack.worker("--queues", queues, "--name", name)
    try:
        with TestClient(create_app(stack.settings), raise_server_exceptions=False) as client:
            _approximate_then_complete(client, stack.settings)
    finally:
        output = stack.close()
        assert "Traceback" not in output, output[-4000:]


def _approximate_then_complete(client: TestClient, settings: Settings) -> None:
    headers = auth(issue_keys(settings)["a"])
    policy = {"unlearning_policy": "approximate_then_exact"}
    model_id = _ok(client.post("/models", json={**TINY_MODEL, **policy}, headers=headers), 201)[
        "id"
    ]
    rows = samples(24)
    _ok(client.post(f"/models/{model_id}/samples", json={"samples": rows}, headers=headers))
    job = _ok(client.post(f"/models/{model_id}/train", headers=headers), 202)
    wait_for(
        lambda: _ok(client.get(job["job_url"], headers=headers))["status"] == "succeeded",
        TIMEOUT_S,
        "training",
    )
    body = {"model_id": model_id, "sample_ids": ["s001", "s002"]}
    deletion = _ok(client.post("/deletions", json=body, headers=headers), 202)
    url = f"/deletions/{deletion['id']}"
    done = wait_for(
        lambda: (
            (d := _ok(client.get(url, headers=headers)))["status"] in ("completed", "failed") and d
        ),
        TIMEOUT_S,
        "the served orders' retrains",
    )
    assert done["status"] == "completed" and done["approximated_at"], done

    # Today's state: the other orders' retrains are parked, an hour away.
    status = _ok(client.get(f"/models/{model_id}/status", headers=headers))
    assert status["pending_retrains"] > 0, "the other orders wait, parked"
    certificate = _ok(client.get(f"{url}/certificate", headers=headers))
    assert certificate["unlearning"] == "exact" and certificate["layers_approximated"]
    assert not [a for a in certificate["layers_approximated"] if a["served"]], certificate
    sequences = [q for s in status["shards"] for q in s["sequences"]]
    assert all(q["valid_prefix"] == q["exact_prefix"] for q in sequences), sequences
    engine = make_engine(settings.database_url)
    with engine.connect() as conn:
        servable = conn.execute(
            sa.select(Layer.id, Layer.artifact_ref).where(
                Layer.approximate.is_(True),
                Layer.state.in_([LayerState.active, LayerState.invalidated]),
            )
        ).all()
    engine.dispose()
    assert not servable, f"approximate layers left servable: {servable}"

    def collected() -> bool:  # by the housekeeping round that follows the completion
        layers = _ok(client.get(f"{url}/certificate", headers=headers))["layers_approximated"]
        return all(a["artifact_deleted"] or a["artifact_in_use"] for a in layers)

    wait_for(collected, 60, "the approximate layers' artifacts to be collected")
