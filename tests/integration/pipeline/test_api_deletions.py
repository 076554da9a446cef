"""The deletion pipeline over HTTP on SQLite and PostgreSQL, jobs run in this process.

Register, train, predict, delete: the deletion is `deactivated` in its 202, predictions move to
the new generation at once, the retrain completes it, and the retrained layers are bitwise what
training without the data gives. Also idempotency, coalescing, a deletion racing a retrain of
the same suffix, subjects across shards, tenants, the certificate, the audit chain and bad input.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.db.models import Layer, LayerState, Model, Sample, SamplePayload
from service.db.repositories import DeletionRepository
from service.deletions.schemas import DeletionCreate
from service.deletions.service import request_deletion
from tests.integration.api import (
    TINY_MODEL,
    Api,
    InProcessWorker,
    active_digests,
    invalidated_by,
    problem,
    samples,
    trained_model,
    trained_without,
    used_layers,
)
from unlearning.s3t import TrainedLayer
from unlearning.sharding import assign

pytestmark = pytest.mark.integration
N_SAMPLES = 24


def test_delete_deactivates_at_once_and_the_retrain_is_exact(
    api: Api, worker: InProcessWorker
) -> None:
    rows = samples(N_SAMPLES)
    model_id = trained_model(api, worker, rows)
    model = api.ok(api.get(f"/models/{model_id}"))
    before = api.ok(api.post(f"/models/{model_id}/predict", {"texts": ["good thing", "bad"]}))
    assert len(before["predictions"]) == 2 and len(before["shards"]) == 2
    assert before["predictions"][0]["label"] in ("neg", "pos")
    blank = api.post(f"/models/{model_id}/predict", {"texts": ["good", "  \n"]})
    assert "must not be blank" in str(problem(blank, 422)), "as for a sample's text"

    response = api.delete(model_id, sample_ids=["s003", "s010"])
    deletion = api.ok(response, 202)
    assert response.headers["location"] == f"/deletions/{deletion['id']}"
    assert deletion["status"] == "deactivated" and deletion["deactivated_at"]
    assert deletion["counts"] == {"requested": 2, "deleted": 2, "already_deleted": 0, "unknown": 0}
    assert deletion["serving_generation"] > before["serving_generation"]
    assert deletion["jobs"]

    status = api.ok(api.get(f"/models/{model_id}/status"))
    assert status["serving_generation"] == deletion["serving_generation"]
    # The deletion waits for the order each touched shard serves best; the others are parked.
    pending = [j for s in status["shards"] for q in s["sequences"] for j in q["pending"]]
    assert {j["job_id"] for j in pending if j["waiting"] is None} == set(deletion["jobs"])
    assert sum(s["deleted_samples"] for s in status["shards"]) == 2
    after = api.ok(api.post(f"/models/{model_id}/predict", {"texts": ["good thing"]}))
    assert not used_layers(after) & invalidated_by(api, deletion["id"])
    for shard in status["shards"]:  # each served prefix is valid after the deletion
        if shard["serving"] is not None:
            chosen = shard["sequences"][shard["serving"]["sequence"]]
            assert shard["serving"]["stages"] == chosen["valid_prefix"] >= 1

    worker.drain()
    done = api.ok(api.get(f"/deletions/{deletion['id']}"))
    assert done["status"] == "completed"
    assert done["retraining_at"] and done["completed_at"]
    status = api.ok(api.get(f"/models/{model_id}/status"))
    assert status["pending_retrains"] == 0
    assert all(q["valid_prefix"] == 2 for s in status["shards"] for q in s["sequences"])

    reference = trained_without(worker.engine, model, rows, {"s003", "s010"})
    assert active_digests(worker, model_id) == reference

    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    assert certificate["payloads_deleted"] and certificate["audit_chain_verified"]
    assert len(certificate["sample_id_hashes"]) == 2 and "s003" not in str(certificate)
    assert certificate["layers_invalidated"] and certificate["layers_retrained"]
    retrained = {layer["artifact"] for layer in certificate["layers_retrained"]}
    assert retrained <= reference
    audit = api.ok(api.get(f"/models/{model_id}/audit"))
    assert audit["verification"]["ok"]
    actions = [e["action"] for e in audit["entries"]]
    assert actions[0] == "training.requested" and "deletions.completed" in actions
    assert actions.index("deletion.deactivated") < actions.index("deletions.completed")


def test_payloads_and_identifiers_are_gone_once_deactivated(
    api: Api, worker: InProcessWorker
) -> None:
    rows = samples(8, subjects={1: "alice@example.com"})
    model = api.ok(api.post("/models", TINY_MODEL), 201)
    api.ok(api.post(f"/models/{model['id']}/samples", {"samples": rows}))
    deletion = api.ok(api.delete(model["id"], sample_ids=["s001"]), 202)
    assert deletion["status"] == "completed"  # nothing was trained on it yet
    with worker.factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(SamplePayload)) == 7
        deleted = session.scalars(sa.select(Sample).where(Sample.deleted.is_(True))).one()
        assert deleted.external_id.startswith("deleted:") and deleted.subject_id is None
    again = api.ok(api.delete(model["id"], sample_ids=["s001"]), 202)
    assert again["counts"]["already_deleted"] == 1 and again["status"] == "completed"


def test_idempotency_keys(api: Api, worker: InProcessWorker) -> None:
    model_id = api.ok(api.post("/models", TINY_MODEL), 201)["id"]
    api.ok(api.post(f"/models/{model_id}/samples", {"samples": samples(6)}))
    first = api.ok(api.delete(model_id, "k-1", sample_ids=["s001", "s002"]), 202)
    retry = api.ok(api.delete(model_id, "k-1", sample_ids=["s002", "s001"]), 202)
    assert retry["id"] == first["id"] and retry["counts"] == first["counts"]
    body = problem(api.delete(model_id, "k-1", sample_ids=["s003"]), 409)
    assert "Idempotency-Key" in body["detail"]
    partial = api.ok(api.delete(model_id, sample_ids=["s003", "nope"]), 202)
    assert partial["partial"] and partial["unknown_ids"] == ["nope"]
    listed = api.ok(api.get("/deletions", params={"model_id": model_id}))
    assert [d["id"] for d in listed["items"]] == [partial["id"], first["id"]]


def test_a_key_raced_for_another_model_is_a_conflict(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests for two models do not queue on one row lock, so with one key the second's lookup
    can miss the first's request, not yet committed: it loses at the unique key, a 409 problem
    (never a 500), and nothing of it stays."""
    models = [api.ok(api.post("/models", TINY_MODEL), 201)["id"] for _ in range(2)]
    for model_id in models:
        api.ok(api.post(f"/models/{model_id}/samples", {"samples": samples(2)}))
    api.ok(api.delete(models[0], "k-race", sample_ids=["s001"]), 202)
    with monkeypatch.context() as patch:  # the lookup ran before the first request committed
        patch.setattr(DeletionRepository, "by_key", lambda *_args, **_kwargs: None)
        body = problem(api.delete(models[1], "k-race", sample_ids=["s001"]), 409)
    assert "Idempotency-Key" in body["detail"]
    after = api.ok(api.delete(models[1], sample_ids=["s001"]), 202)
    assert after["counts"]["deleted"] == 1


def _pending(api: Api, model_id: str) -> list[dict[str, Any]]:
    status = api.ok(api.get(f"/models/{model_id}/status"))
    return [j for s in status["shards"] for q in s["sequences"] for j in q["pending"]]


def test_deletions_coalesce_into_the_queued_retrain(api: Api, worker: InProcessWorker) -> None:
    rows = samples(N_SAMPLES)
    model_id = trained_model(api, worker, rows)
    shard_of = {r["external_id"]: assign(model_id, r["external_id"], 2, 2)[0] for r in rows}
    same_shard = [i for i, s in shard_of.items() if s == 0][:2]
    first = api.ok(api.delete(model_id, sample_ids=same_shard[:1]), 202)
    queued = {j["job_id"] for j in _pending(api, model_id)}
    assert len(queued) == 2  # one per order of the shard: the served one's, the parked one's
    second = api.ok(api.delete(model_id, sample_ids=same_shard[1:]), 202)
    # The second deletion joins those queued jobs (it waits for the order now served best,
    # which may be the other one): no new job.
    assert (
        set(second["jobs"]) <= queued and {j["job_id"] for j in _pending(api, model_id)} == queued
    )
    assert worker.drain() == 2
    for deletion in (first, second):
        assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "completed"
    model = api.ok(api.get(f"/models/{model_id}"))
    reference = trained_without(worker.engine, model, rows, set(same_shard))
    assert active_digests(worker, model_id) == reference


def test_a_deletion_during_a_retrain_discards_it_and_retrains_again(
    api: Api, worker: InProcessWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = samples(N_SAMPLES)
    model_id = trained_model(api, worker, rows)
    shard_of = {r["external_id"]: assign(model_id, r["external_id"], 2, 2)[0] for r in rows}
    victims = [i for i, s in shard_of.items() if s == 1][:2]
    first = api.ok(api.delete(model_id, sample_ids=victims[:1]), 202)
    late: dict[str, Any] = {}
    retrain = worker.engine.retrain

    def retrain_then_delete(*args: Any, **kwargs: Any) -> list[TrainedLayer]:
        trained = retrain(*args, **kwargs)
        if not late:  # lands while the first job trains, before it records
            late.update(api.ok(api.delete(model_id, sample_ids=victims[1:]), 202))
        return trained

    monkeypatch.setattr(worker.engine, "retrain", retrain_then_delete)
    worker.run(uuid.UUID(first["jobs"][0]))
    stale = api.ok(api.get(f"/jobs/{first['jobs'][0]}"))
    assert stale["status"] in ("succeeded", "cancelled") and "discarded" in stale["error"]
    with worker.factory() as session:
        assert session.scalar(
            sa.select(sa.func.count()).select_from(Layer).where(Layer.state == "discarded")
        )
    first_now = api.ok(api.get(f"/deletions/{first['id']}"))
    assert first_now["status"] == "retraining"
    waits_on = [api.ok(api.get(f"/jobs/{j}"))["status"] for j in first_now["jobs"]]
    assert "queued" in waits_on  # handed to the sequence's follow-up retrain
    worker.drain()
    for deletion in (first, late):
        assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "completed"
    model = api.ok(api.get(f"/models/{model_id}"))
    reference = trained_without(worker.engine, model, rows, set(victims))
    assert active_digests(worker, model_id) == reference


def test_a_subject_is_deleted_across_shards(api: Api, worker: InProcessWorker) -> None:
    """Under `sample` placement a subject's samples may lie on several shards."""
    model_id = api.ok(api.post("/models", {**TINY_MODEL, "placement": "sample"}), 201)["id"]
    ids = [f"s{i:03d}" for i in range(N_SAMPLES)]
    shards = {i: assign(model_id, ext, 2, 2)[0] for i, ext in enumerate(ids)}
    alice = [
        next(i for i, s in shards.items() if s == 0),
        next(i for i, s in shards.items() if s == 1),
    ]
    rows = samples(N_SAMPLES, subjects=dict.fromkeys(alice, "alice"))
    api.ok(api.post(f"/models/{model_id}/samples", {"samples": rows}))
    api.ok(api.post(f"/models/{model_id}/train"), 202)
    worker.drain()
    deletion = api.ok(api.delete(model_id, subject_id="alice"), 202)
    assert deletion["counts"]["deleted"] == 2
    status = api.ok(api.get(f"/models/{model_id}/status"))
    assert [s["deleted_samples"] for s in status["shards"]] == [1, 1]
    assert len(deletion["jobs"]) == 2  # per shard, the order it serves best first ...
    status = api.ok(api.get(f"/models/{model_id}/status"))
    parked = [j for s in status["shards"] for q in s["sequences"] for j in q["pending"]]
    assert sum(j["waiting"] is not None for j in parked) == 2  # ... and the others parked
    worker.drain()
    assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "completed"
    cert = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    assert cert["subject_hash"] and "alice" not in str(cert)
    assert (deletion["subject"], deletion["partial"]) == ("deleted", False)


def test_a_subject_deleted_before_and_an_unknown_subject_are_told_apart(
    api: Api, worker: InProcessWorker
) -> None:
    """Neither deletes anything; the answer says which: nothing left of a subject deleted
    before, or no sample of that subject ever (``partial``, like an unknown sample id)."""
    rows = samples(N_SAMPLES, subjects={3: "alice", 4: "alice"})
    model_id = trained_model(api, worker, rows)
    first = api.ok(api.delete(model_id, subject_id="alice"), 202)
    assert (first["subject"], first["partial"], first["counts"]["deleted"]) == ("deleted", False, 2)
    again = api.ok(api.delete(model_id, subject_id="alice"), 202)
    assert (again["subject"], again["partial"], again["status"]) == (
        "already_deleted",
        False,
        "completed",
    )
    unknown = api.ok(api.delete(model_id, subject_id="nobody"), 202)
    assert (unknown["subject"], unknown["partial"], unknown["status"]) == (
        "unknown",
        True,
        "completed",
    )
    assert unknown["counts"] == {"requested": 0, "deleted": 0, "already_deleted": 0, "unknown": 0}
    for deletion in (first, again, unknown):  # a read says the same as the 202
        read = api.ok(api.get(f"/deletions/{deletion['id']}"))
        assert (read["subject"], read["partial"]) == (deletion["subject"], deletion["partial"])
    by_ids = api.ok(api.delete(model_id, sample_ids=["s007"]), 202)
    assert by_ids["subject"] is None


def test_another_tenant_sees_nothing(
    api: Api, worker: InProcessWorker, client: TestClient, keys: dict[str, str]
) -> None:
    model_id = api.ok(api.post("/models", TINY_MODEL), 201)["id"]
    api.ok(api.post(f"/models/{model_id}/samples", {"samples": samples(6)}))
    job = api.ok(api.post(f"/models/{model_id}/train"), 202)
    deletion = api.ok(api.delete(model_id, sample_ids=["s001"]), 202)
    other = Api(client, keys["b"])
    for url in (
        f"/deletions/{deletion['id']}",
        f"/deletions/{deletion['id']}/certificate",
        job["job_url"],
        f"/models/{model_id}/status",
        f"/models/{model_id}/audit",
    ):
        problem(other.get(url), 404)
    problem(other.delete(model_id, sample_ids=["s002"]), 404)
    problem(other.post(f"/models/{model_id}/predict", {"texts": ["x"]}), 404)
    problem(other.post(f"/models/{model_id}/train"), 404)
    assert other.ok(other.get("/deletions"))["items"] == []


def test_deletions_page_with_a_cursor(api: Api) -> None:
    model_id = api.ok(api.post("/models", TINY_MODEL), 201)["id"]
    api.ok(api.post(f"/models/{model_id}/samples", {"samples": samples(6)}))
    made = [api.ok(api.delete(model_id, sample_ids=[f"s00{i}"]), 202)["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.ok(api.get("/deletions", params=params))
        seen += [d["id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made[::-1]
    completed = api.ok(api.get("/deletions", params={"status": "completed"}))
    assert len(completed["items"]) == 5


MODEL_ID = "00000000-0000-0000-0000-000000000000"


@pytest.mark.parametrize(
    ("method", "url", "body", "headers", "status"),
    [
        ("post", "/deletions", {}, None, 422),
        ("post", "/deletions", {"model_id": "{m}"}, None, 422),
        ("post", "/deletions", {"model_id": "{m}", "sample_ids": []}, None, 422),
        (
            "post",
            "/deletions",
            {"model_id": "{m}", "sample_ids": ["a"], "subject_id": "x"},
            None,
            422,
        ),
        ("post", "/deletions", {"model_id": "{m}", "sample_ids": ["a" * 256]}, None, 422),
        ("post", "/deletions", {"model_id": "{m}", "sample_ids": [7]}, None, 422),
        ("post", "/deletions", {"model_id": "nope", "sample_ids": ["a"]}, None, 422),
        ("post", "/deletions", {"model_id": MODEL_ID, "sample_ids": ["a"]}, None, 404),
        (
            "post",
            "/deletions",
            {"model_id": "{m}", "sample_ids": ["a"]},
            {"Idempotency-Key": "k" * 256},
            422,
        ),
        ("post", "/deletions", {"model_id": "{m}", "sample_ids": ["a"], "extra": 1}, None, 422),
        ("get", "/deletions?limit=0", None, None, 422),
        ("get", "/deletions?limit=201", None, None, 422),
        ("get", "/deletions?cursor=%%%", None, None, 422),
        ("get", "/deletions?status=gone", None, None, 422),
        ("get", f"/deletions/{MODEL_ID}", None, None, 404),
        ("get", "/deletions/nope", None, None, 422),
        ("get", f"/deletions/{MODEL_ID}/certificate", None, None, 404),
        ("get", f"/jobs/{MODEL_ID}", None, None, 404),
        ("get", "/jobs/nope", None, None, 422),
        ("post", "/models/{m}/train", None, None, 409),  # no samples yet
        ("post", f"/models/{MODEL_ID}/train", None, None, 404),
        ("get", f"/models/{MODEL_ID}/status", None, None, 404),
        ("post", "/models/{m}/predict", {"texts": ["x"]}, None, 409),  # not trained
        ("post", "/models/{m}/predict", {"texts": []}, None, 422),
        ("post", "/models/{m}/predict", {"texts": ["x"] * 257}, None, 422),
        ("post", "/models/{m}/predict", {"texts": [""]}, None, 422),
        ("post", "/models/{m}/predict", {"text": "x"}, None, 422),
        ("get", "/models/{m}/audit?after_seq=-1", None, None, 422),
        ("get", "/models/{m}/audit?limit=0", None, None, 422),
    ],
)
def test_bad_input_is_a_4xx_problem(
    api: Api,
    method: str,
    url: str,
    body: Any,
    headers: dict[str, str] | None,
    status: int,
) -> None:
    model_id = api.ok(api.post("/models", TINY_MODEL), 201)["id"]
    url = url.replace("{m}", model_id)
    if isinstance(body, dict) and body.get("model_id") == "{m}":
        body = {**body, "model_id": model_id}
    response = api.get(url) if method == "get" else api.post(url, body, headers)
    problem(response, status)


def test_training_twice_at_once_is_a_conflict(api: Api, worker: InProcessWorker) -> None:
    model_id = api.ok(api.post("/models", TINY_MODEL), 201)["id"]
    api.ok(api.post(f"/models/{model_id}/samples", {"samples": samples(8)}))
    api.ok(api.post(f"/models/{model_id}/train"), 202)
    problem(api.post(f"/models/{model_id}/train"), 409)
    worker.drain()
    assert api.ok(api.get(f"/models/{model_id}"))["status"] == "ready"


def test_a_deletion_during_a_prediction_is_never_answered_around(
    api: Api, worker: InProcessWorker, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first forward pass races a deletion that commits while it runs: the answer is
    computed again without the invalidated layers, and says so with its generation."""
    rows = samples(N_SAMPLES)
    model_id = trained_model(api, worker, rows)
    api.ok(api.post(f"/models/{model_id}/predict", {"texts": ["warm up"]}))
    registry = client.app.state.serving  # type: ignore[attr-defined]
    engine = registry.engine_of(uuid.UUID(model_id))
    used: list[set[str]] = []
    deleted: dict[str, Any] = {}
    predict = engine.predict

    def predict_while_deleting(config: Any, texts: Any, prefixes: Any, **kw: Any) -> Any:
        used.append({ref for refs in prefixes.values() for ref in refs})
        if not deleted:
            with worker.factory() as session, session.begin():
                request = request_deletion(
                    session,
                    _tenant_of(session, model_id),
                    DeletionCreate(model_id=uuid.UUID(model_id), sample_ids=["s005"]),
                    actor="test",
                )
                deleted["generation"] = request.request.serving_generation
                deleted["id"] = str(request.request.id)
        return predict(config, texts, prefixes, **kw)

    monkeypatch.setattr(engine, "predict", predict_while_deleting)
    answer = api.ok(api.post(f"/models/{model_id}/predict", {"texts": ["good thing"]}))
    assert len(used) == 2  # computed again after the deletion
    assert answer["serving_generation"] >= deleted["generation"]
    assert not used_layers(answer) & invalidated_by(api, deleted["id"])
    with worker.factory() as session:
        invalid = session.scalars(
            sa.select(Layer.artifact_ref).where(Layer.state == LayerState.invalidated)
        ).all()
    assert invalid and used[0] & set(invalid) and not used[1] & set(invalid)


def _tenant_of(session: Any, model_id: str) -> uuid.UUID:
    tenant_id: uuid.UUID = session.get_one(Model, uuid.UUID(model_id)).tenant_id
    return tenant_id


def test_a_failed_deletion_can_be_retried(
    api: Api, worker: InProcessWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = samples(N_SAMPLES)
    model_id = trained_model(api, worker, rows)
    deletion = api.ok(api.delete(model_id, sample_ids=["s003"]), 202)
    problem(api.post(f"/deletions/{deletion['id']}/retry"), 409)  # it has not failed
    retrain = worker.engine.retrain

    def broken(*args: Any, **kwargs: Any) -> list[TrainedLayer]:
        raise RuntimeError("the GPU fell off")

    monkeypatch.setattr(worker.engine, "retrain", broken)
    for job_id in worker.queued():  # every retrain of the deletion fails
        with pytest.raises(RuntimeError):
            worker.run(job_id)
    failed = api.ok(api.get(f"/deletions/{deletion['id']}"))
    assert failed["status"] == "failed" and "GPU fell off" in failed["failure_reason"]

    monkeypatch.setattr(worker.engine, "retrain", retrain)
    retried = api.ok(api.post(f"/deletions/{deletion['id']}/retry"), 202)
    assert retried["status"] == "retraining" and retried["jobs"] != deletion["jobs"]
    worker.drain()
    assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "completed"
    model = api.ok(api.get(f"/models/{model_id}"))
    assert active_digests(worker, model_id) == trained_without(worker.engine, model, rows, {"s003"})
    audit = [e["action"] for e in api.ok(api.get(f"/models/{model_id}/audit"))["entries"]]
    assert "deletion.retried" in audit
