"""Exactness on demand over HTTP (SQLite and PostgreSQL, jobs run in this process): an admin
asks for an audit, the shards are retrained from scratch into a scratch store and every active
exact layer is compared with its recorded artifact and with the bytes stored. It passes after
real deletions and their retrains (approximate layers skipped), fails naming a layer whose file
was swapped, shows on the certificates it covers and on the dashboard, and refuses bad input."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.db.models import Job, Layer, LayerState, Role
from service.exactness import runner as exactness_runner
from service.settings import Settings
from tests.integration.api import (
    TINY_MODEL,
    Api,
    InProcessWorker,
    issue_keys,
    problem,
    samples,
    trained_model,
)
from tests.integration.pipeline.test_dashboard import login

pytestmark = pytest.mark.integration
GONE = ["s003", "s010"]
LAYERS = 8  # 2 shards x 2 sequences x 2 stages


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the audit's temporary folders go (to see that none is left behind)."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _marker(audit: dict[str, Any], result: str) -> str:
    """How the dashboard marks a finished audit's row."""
    return f'data-exactness-audit="{audit["id"]}" data-status="succeeded" data-result="{result}"'


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _lineage(worker: InProcessWorker) -> list[tuple[int, str, str | None]]:
    with worker.factory() as session:
        rows = session.execute(sa.select(Layer.id, Layer.state, Layer.artifact_ref)).all()
        return sorted((i, str(state), ref) for i, state, ref in rows)


def _audit(admin: Api, worker: InProcessWorker, model_id: str, **body: Any) -> dict[str, Any]:
    """Request an audit, run it, and read it back."""
    response = admin.post(f"/models/{model_id}/exactness-audits", body or None)
    accepted = admin.ok(response, 202)
    assert accepted["status"] == "queued" and accepted["result"] is None
    assert response.headers["location"] == accepted["audit_url"]
    again = admin.ok(admin.post(f"/models/{model_id}/exactness-audits", body or None), 202)
    assert again["id"] == accepted["id"], "the same audit, queued, is not queued twice"
    assert worker.audit() == 1
    audit: dict[str, Any] = admin.ok(admin.get(accepted["audit_url"]))
    assert audit["status"] == "succeeded", audit["note"]
    return audit


def test_the_audit_passes_after_deletions_and_their_retrains(
    client: TestClient,
    api: Api,
    admin: Api,
    worker: InProcessWorker,
    settings: Settings,
    scratch: Path,
) -> None:
    model_id = trained_model(
        api, worker, samples(24), {"unlearning_policy": "approximate_then_exact"}
    )
    deletion = api.ok(api.delete(model_id, sample_ids=GONE), 202)
    assert worker.approximate() == 1  # approximate layers serve until the exact retrain

    assert settings.artifacts_dir is not None
    store_before, lineage_before = _files(settings.artifacts_dir), _lineage(worker)
    during = _audit(admin, worker, model_id)
    assert _files(settings.artifacts_dir) == store_before, "the real store is never written"
    assert _lineage(worker) == lineage_before, "nor the lineage"
    assert list(scratch.iterdir()) == [], "the scratch store is gone"
    assert during["result"] == "passed" and during["mismatched"] == []
    skipped = [layer for layer in during["layers"] if layer["skipped"]]
    assert skipped and {layer["skipped"] for layer in skipped} == {"approximate"}
    assert during["layers_skipped"] == len(skipped)
    assert during["layers_checked"] == len(during["layers"]) - len(skipped) >= 1

    assert worker.drain() >= 1
    assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "completed"
    after = _audit(admin, worker, model_id)
    assert after["result"] == "passed" and after["shards"] == [0, 1]
    assert after["layers_checked"] == LAYERS and after["layers_skipped"] == 0
    for layer in after["layers"]:
        assert layer["match"] is True
        assert layer["recomputed"] == layer["artifact"] == layer["stored_digest"]
    assert "passed" in after["note"]
    with worker.factory() as session:
        active = session.scalars(sa.select(Layer).where(Layer.state == LayerState.active)).all()
        assert {(layer.id, layer.artifact_ref) for layer in active} == {
            (layer["layer_id"], layer["artifact"]) for layer in after["layers"]
        }

    log = api.ok(api.get(f"/models/{model_id}/audit"))
    assert log["verification"]["ok"]
    audited = [e for e in log["entries"] if e["action"] == "exactness.audited"]
    assert [e["payload"]["job_id"] for e in audited] == [during["id"], after["id"]]
    assert audited[1]["payload"]["layers"] == [
        {k: v for k, v in layer.items() if v is not None} for layer in after["layers"]
    ]
    assert after["audit_seq"] == audited[1]["seq"]
    requested = [e for e in log["entries"] if e["action"] == "exactness.requested"]
    assert len(requested) == 2 and requested[0]["actor"].startswith("key:")

    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    (link,) = certificate["exactness_audits"]  # the audit before completion does not count
    assert (link["job_id"], link["result"], link["mismatched"]) == (after["id"], "passed", [])
    assert link["audit_seq"] == audited[1]["seq"] and link["audit_hash"] == audited[1]["hash"]
    assert 1 <= link["layers_checked"] <= LAYERS
    listed = api.ok(api.get(f"/models/{model_id}/exactness-audits"))
    assert [a["id"] for a in listed] == [after["id"], during["id"]]
    job = api.ok(api.get(after["job_url"]))
    assert (job["kind"], job["status"], job["progress"]) == ("exactness_audit", "succeeded", 1.0)

    login(client, admin.headers["Authorization"].removeprefix("Bearer "))
    page = client.get(f"/dashboard/models/{model_id}")
    assert page.status_code == 200 and 'data-live="exactness"' in page.text
    part = client.get(f"/dashboard/models/{model_id}?part=exactness").text
    assert _marker(after, "passed") in part
    drill = client.get(f"/dashboard/deletions/{deletion['id']}").text
    assert f'data-exactness-audit="{after["id"]}" data-result="passed"' in drill


def test_a_swapped_artifact_fails_the_audit_and_is_named(
    client: TestClient, api: Api, admin: Api, worker: InProcessWorker, settings: Settings
) -> None:
    model_id = trained_model(api, worker, samples(24))
    assert settings.artifacts_dir is not None
    with worker.factory() as session:
        active = session.scalars(
            sa.select(Layer).where(Layer.state == LayerState.active).order_by(Layer.id)
        ).all()
        victim, donor = active[0], active[-1]
        victim_ref, donor_ref = victim.artifact_ref, donor.artifact_ref
        assert victim_ref and donor_ref and victim_ref != donor_ref

    def path(ref: str) -> Path:
        digest = ref.removeprefix("sha256:")
        assert settings.artifacts_dir is not None
        return settings.artifacts_dir / digest[:2] / digest

    path(victim_ref).write_bytes(path(donor_ref).read_bytes())  # same name, another layer's bytes
    audit = _audit(admin, worker, model_id)
    assert audit["status"] == "succeeded", "a mismatch is the audit's finding, not a job failure"
    assert audit["result"] == "failed" and audit["mismatched"] == [victim.id]
    assert f"layer {victim.id}" in audit["note"] and "FAILED" in audit["note"]
    (bad,) = [layer for layer in audit["layers"] if not layer["match"]]
    assert (bad["layer_id"], bad["artifact"], bad["recomputed"], bad["stored_digest"]) == (
        victim.id,
        victim_ref,
        victim_ref,  # a retrain gives the recorded artifact: only the stored bytes differ
        donor_ref,
    )
    assert bad["problem"] == "the stored bytes are not the recorded artifact"
    assert sum(1 for layer in audit["layers"] if layer["match"]) == LAYERS - 1

    login(client, admin.headers["Authorization"].removeprefix("Bearer "))
    part = client.get(f"/dashboard/models/{model_id}?part=exactness").text
    assert _marker(audit, "failed") in part
    assert f"#{victim.id}" in part


def test_only_an_admin_audits_a_trained_model_of_its_shards(
    api: Api, admin: Api, worker: InProcessWorker, settings: Settings
) -> None:
    untrained = api.ok(api.post("/models", TINY_MODEL), 201)["id"]
    api.ok(api.post(f"/models/{untrained}/samples", {"samples": samples(8)}))
    assert (
        "only a trained model"
        in problem(admin.post(f"/models/{untrained}/exactness-audits"), 409)["detail"]
    )
    model_id = trained_model(api, worker, samples(24))
    url = f"/models/{model_id}/exactness-audits"
    problem(api.post(url), 403)  # an app key
    assert "no shard 2" in problem(admin.post(url, {"shards": [0, 2]}), 422)["detail"]
    bodies: list[dict[str, Any]] = [{"shards": []}, {"shards": [-1]}, {"shards": ["x"]}, {"x": 1}]
    for body in bodies:
        problem(admin.post(url, body), 422)
    other = Api(admin.client, issue_keys(settings, Role.admin)["b"])
    problem(other.post(url), 404)  # another tenant's model
    with worker.factory() as session:
        assert not session.scalars(sa.select(Job).where(Job.kind == "exactness_audit")).all()

    one = _audit(admin, worker, model_id, shards=[1, 1])
    assert one["shards"] == [1] and one["result"] == "passed"
    assert {layer["shard"] for layer in one["layers"]} == {1}
    problem(api.get(f"{url}/{uuid.uuid4()}"), 404)
    problem(other.get(f"{url}/{one['id']}"), 404)
    assert [a["id"] for a in api.ok(api.get(url))] == [one["id"]]
    with worker.factory() as session:
        train_job = session.scalars(sa.select(Job.id).where(Job.kind == "train")).first()
    problem(api.get(f"{url}/{train_job}"), 404)  # a job, but not an audit


def test_a_sample_registered_after_training_shows_as_a_difference(
    api: Api, admin: Api, worker: InProcessWorker
) -> None:
    """Today's live samples are what a full retrain would train on: a sample registered after
    training is in them but in no layer, so its layers differ from the retrain (not the store)."""
    model_id = trained_model(api, worker, samples(24))
    late = {"external_id": "late", "label": "pos", "text": "good late item"}
    api.ok(api.post(f"/models/{model_id}/samples", {"samples": [late]}))
    audit = _audit(admin, worker, model_id)
    assert audit["result"] == "failed" and audit["mismatched"]
    differing = [layer for layer in audit["layers"] if not layer["match"]]
    assert [layer["layer_id"] for layer in differing] == audit["mismatched"]
    assert len({layer["shard"] for layer in differing}) == 1, "only the sample's shard"
    for layer in differing:
        assert layer["recomputed"] != layer["artifact"] == layer["stored_digest"]
        assert layer["problem"].startswith("a retrain from scratch gives other weights")


def test_layers_a_deletion_invalidates_during_the_audit_are_skipped(
    api: Api, admin: Api, worker: InProcessWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_id = trained_model(api, worker, samples(24))
    retrain = exactness_runner._retrain

    def delete_meanwhile(*args: Any) -> dict[tuple[int, int, int], str]:
        api.ok(api.delete(model_id, sample_ids=GONE), 202)  # after the data was read
        return retrain(*args)

    monkeypatch.setattr(exactness_runner, "_retrain", delete_meanwhile)
    audit = _audit(admin, worker, model_id)
    changed = [layer for layer in audit["layers"] if layer["skipped"]]
    assert changed and {layer["skipped"] for layer in changed} == {"changed during the audit"}
    assert all(layer["recomputed"] is None for layer in changed)
    assert audit["result"] == "passed" and audit["layers_checked"] == LAYERS - len(changed)
