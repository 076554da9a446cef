"""Keeping the model served while it unlearns, over HTTP on SQLite and PostgreSQL: subject-aware
placement, S3T-aware retraining (the served order first, the others parked, deletions inside
the window joining one retrain) and the availability threshold (`min_live_shards`)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from service.db.engine import unit_of_work
from service.db.models import Job, OutboxMessage, Sample
from service.db.models.base import utcnow
from service.training.scheduling import release_due
from tests.integration.api import (
    TINY_MODEL,
    Api,
    InProcessWorker,
    active_digests,
    problem,
    samples,
    trained_without,
)

pytestmark = pytest.mark.integration

#: Four shards of two slices and two orders: 8 subjects of 4 samples, 8 samples of no subject.
MODEL = {**TINY_MODEL, "n_shards": 4}
SUBJECTS = {i: f"subject-{i // 4}" for i in range(32)}


def _rows() -> list[dict[str, Any]]:
    return samples(40, subjects=SUBJECTS)


def _train(api: Api, worker: InProcessWorker, body: dict[str, Any]) -> str:
    model = api.ok(api.post("/models", body), 201)
    api.ok(api.post(f"/models/{model['id']}/samples", {"samples": _rows()}))
    api.ok(api.post(f"/models/{model['id']}/train"), 202)
    worker.drain()
    model_id: str = model["id"]
    return model_id


def _pending(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [j for s in status["shards"] for q in s["sequences"] for j in q["pending"]]


def _placements(worker: InProcessWorker, model_id: str) -> dict[str, set[tuple[Any, Any]]]:
    with worker.factory() as session:
        rows = session.execute(
            sa.select(Sample.subject_id, Sample.shard_id, Sample.slice_id).where(
                Sample.model_id == uuid.UUID(model_id)
            )
        )
        places: dict[str, set[tuple[Any, Any]]] = {}
        for subject, shard, slice_ in rows:
            places.setdefault(subject or "-", set()).add((shard, slice_))
        return places


def test_a_subject_lives_in_one_slice_and_its_deletion_cuts_one_shard(
    api: Api, worker: InProcessWorker
) -> None:
    model_id = _train(api, worker, MODEL)
    model = api.ok(api.get(f"/models/{model_id}"))
    assert model["placement"] == "subject"  # the default
    places = _placements(worker, model_id)
    assert all(len(places[f"subject-{k}"]) == 1 for k in range(8))

    deletion = api.ok(api.delete(model_id, subject_id="subject-3"), 202)
    assert deletion["counts"]["deleted"] == 4
    status = api.ok(api.get(f"/models/{model_id}/status"))
    touched = [s for s in status["shards"] if s["deleted_samples"]]
    assert len(touched) == 1 and len(deletion["jobs"]) <= 1  # one shard, its served order
    assert status["estimated_quality"]["live_shards"] >= 3 / 4  # (m-1)/m at least
    for _ in range(5):  # never refused while it unlearns
        api.ok(api.post(f"/models/{model_id}/predict", {"texts": ["good", "bad"]}))

    worker.drain()
    assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "completed"
    gone = {r["external_id"] for r in _rows() if r.get("subject_id") == "subject-3"}
    reference = trained_without(
        worker.engine, model, _rows(), gone, placed=worker.placements(model_id)
    )
    assert active_digests(worker, model_id) == reference  # still bitwise exact


def test_sample_placement_spreads_a_subject(api: Api, worker: InProcessWorker) -> None:
    model_id = _train(api, worker, {**MODEL, "placement": "sample"})
    assert api.ok(api.get(f"/models/{model_id}"))["placement"] == "sample"
    places = _placements(worker, model_id)
    assert any(len(places[f"subject-{k}"]) > 1 for k in range(8))


def test_registration_reports_the_slice_balance(api: Api) -> None:
    model = api.ok(api.post("/models", {**MODEL, "n_shards": 2}), 201)
    heavy = [
        {"external_id": f"h{i}", "label": "pos", "text": "good", "subject_id": "heavy"}
        for i in range(60)
    ]
    result = api.ok(api.post(f"/models/{model['id']}/samples", {"samples": heavy + _rows()}))
    balance = result["balance"]
    assert sum(map(sum, balance["sizes"])) == 100 and balance["mean"] == 25.0
    biggest = max(map(max, balance["sizes"]))  # the heavy subject's slice
    assert biggest >= 60 and any(f"holds {biggest} samples" in u for u in balance["unbalanced"])
    status = api.ok(api.get(f"/models/{model['id']}/status"))
    assert any(w.startswith("unbalanced slice") for w in status["warnings"])


def test_the_served_order_is_retrained_first_and_the_others_are_parked(
    api: Api, worker: InProcessWorker
) -> None:
    model_id = _train(api, worker, MODEL)
    first = api.ok(api.delete(model_id, sample_ids=["s035"]), 202)  # no subject: one sample
    status = api.ok(api.get(f"/models/{model_id}/status"))
    shard = next(s for s in status["shards"] if s["deleted_samples"])
    served = shard["serving"]["sequence"] if shard["serving"] else None
    pending = {j["job_id"]: j for q in shard["sequences"] for j in q["pending"]}
    waited = set(first["jobs"])
    parked = {i for i, j in pending.items() if j["waiting"]}
    assert waited and parked and not waited & parked and waited | parked == set(pending)
    for q in shard["sequences"]:
        for job in q["pending"]:
            assert (job["job_id"] in waited) == (q["index"] == served or served is None)
    reason = pending[next(iter(parked))]["waiting"]
    assert "shard" in reason and "follows after 600 s" in reason
    job = api.ok(api.get(f"/jobs/{next(iter(parked))}"))
    assert job["parked"] == reason and job["parked_until"]
    with worker.factory() as session:  # nothing was sent for the parked job
        sent = {m.payload["job_id"] for m in session.scalars(sa.select(OutboxMessage))}
        assert waited <= sent and not parked & sent

    worker.run(uuid.UUID(next(iter(waited))))  # the served order is back: the deletion is done
    assert api.ok(api.get(f"/deletions/{first['id']}"))["status"] == "completed"
    with unit_of_work(worker.factory) as session:  # not yet due
        assert release_due(session) == 0
    with unit_of_work(worker.factory) as session:  # after the quiet period: sent, low priority
        assert release_due(session, now=utcnow() + timedelta(seconds=601)) == len(parked)
    with worker.factory() as session:
        message = session.scalars(
            sa.select(OutboxMessage).where(OutboxMessage.payload["job_id"].as_string().in_(parked))
        ).one()
        assert message.priority == 0
        assert session.get_one(Job, uuid.UUID(next(iter(parked)))).deferred_until is None


def test_deletions_inside_the_window_join_one_retrain(api: Api, worker: InProcessWorker) -> None:
    model_id = _train(api, worker, MODEL)
    with worker.factory() as session:
        shard_of = dict(
            session.execute(
                sa.select(Sample.external_id, Sample.shard_id).where(
                    Sample.model_id == uuid.UUID(model_id), Sample.subject_id.is_(None)
                )
            ).all()
        )
    pair = next((a, b) for a in shard_of for b in shard_of if a < b and shard_of[a] == shard_of[b])
    first = api.ok(api.delete(model_id, sample_ids=[pair[0]]), 202)
    queued = {j["job_id"] for j in _pending_of(api, model_id)}
    second = api.ok(api.delete(model_id, sample_ids=[pair[1]]), 202)
    assert set(second["jobs"]) <= queued  # joined the shard's queued retrains
    assert {j["job_id"] for j in _pending_of(api, model_id)} == queued  # no new job
    with worker.factory() as session:
        messages = list(session.scalars(sa.select(OutboxMessage)))
        retrains = [m for m in messages if m.payload["job_id"] in queued]
        # Held back by the window (UNLEARN_RETRAIN_WINDOW_S, 2 s by default), sent once each.
        assert retrains and all(m.available_at > m.created_at for m in retrains)
        assert len({m.payload["job_id"] for m in retrains}) == len(retrains)
    worker.drain()
    for deletion in (first, second):
        assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "completed"


def _pending_of(api: Api, model_id: str) -> list[dict[str, Any]]:
    return _pending(api.ok(api.get(f"/models/{model_id}/status")))


def test_below_min_live_shards_the_model_refuses_and_says_why(
    api: Api, worker: InProcessWorker
) -> None:
    problem(api.post("/models", {**MODEL, "min_live_shards": 5}), 422)
    # Placed by sample: every slice of a shard holds samples (subjects may leave one empty).
    model_id = _train(api, worker, {**MODEL, "min_live_shards": 4, "placement": "sample"})
    api.ok(api.post(f"/models/{model_id}/predict", {"texts": ["good"]}))
    # Both slices of one shard lose a sample: every order of that shard is cut at stage 1.
    with worker.factory() as session:
        rows = session.execute(
            sa.select(Sample.external_id, Sample.shard_id, Sample.slice_id).where(
                Sample.model_id == uuid.UUID(model_id)
            )
        ).all()
    by_shard: dict[Any, dict[Any, str]] = {}
    for external_id, shard_id, slice_id in rows:
        by_shard.setdefault(shard_id, {}).setdefault(slice_id, external_id)
    victims = next(v for v in by_shard.values() if len(v) == 2)  # one sample of each slice
    api.ok(api.delete(model_id, sample_ids=list(victims.values())), 202)
    status = api.ok(api.get(f"/models/{model_id}/status"))
    assert status["estimated_quality"]["answering"] is False
    body = problem(api.post(f"/models/{model_id}/predict", {"texts": ["good"]}), 409)
    assert "retraining after deletions" in body["detail"] and "3 of 4 shards" in body["detail"]
    assert "train it first" not in body["detail"]
    worker.drain()
    api.ok(api.post(f"/models/{model_id}/predict", {"texts": ["good"]}))


def test_an_untrained_model_says_to_train_it(api: Api) -> None:
    model = api.ok(api.post("/models", MODEL), 201)
    body = problem(api.post(f"/models/{model['id']}/predict", {"texts": ["x"]}), 409)
    assert "not trained yet" in body["detail"]
