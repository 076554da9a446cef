"""The approximate policies over HTTP on SQLite and PostgreSQL, jobs run in this process.

Under `approximate_then_exact` a deletion deactivates at once as always, keeps the payloads for
the approximate pass sealed (identifiers and plaintext rows go at once), the pass serves the
invalidated stages again as `approximate` layers and purges the payloads, the status and
certificate say so, and the exact retrain replaces them bitwise with training without the data.
A pass never replaces an exact layer, the deadline purges unread payloads (the deletion is then
exact only), and `auto` approximates only when the training queue is backlogged.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from service.approximation.service import purge_overdue
from service.db.models import Job, KeptSamples, Layer, LayerState, Sample, SamplePayload
from service.settings import Settings
from tests.integration.api import (
    TINY_MODEL,
    Api,
    InProcessWorker,
    active_digests,
    problem,
    samples,
    trained_model,
    trained_without,
)
from unlearning.approx import registry
from unlearning.approx import ssd as ssd_module
from unlearning.approx.iau import IAUConfig
from unlearning.approx.ssd import SSDConfig
from unlearning.families import Modality
from unlearning.s3t.config import Task
from unlearning.sharding import assign

pytestmark = pytest.mark.integration
N_SAMPLES = 24
APPROXIMATE = {"unlearning_policy": "approximate_then_exact"}
GONE = ["s003", "s010"]


def _payloads(worker: InProcessWorker) -> int:
    """Plaintext payload rows."""
    with worker.factory() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(SamplePayload)) or 0


def _kept(worker: InProcessWorker) -> int:
    """Deleted samples kept sealed for a pass."""
    with worker.factory() as session:
        return session.scalar(sa.select(sa.func.sum(KeptSamples.n_samples))) or 0


def _actions(api: Api, model_id: str) -> list[dict[str, Any]]:
    audit = api.ok(api.get(f"/models/{model_id}/audit"))
    assert audit["verification"]["ok"]
    entries: list[dict[str, Any]] = audit["entries"]
    return entries


def _approximate_job(api: Api, deletion: dict[str, Any]) -> dict[str, Any]:
    jobs = [api.ok(api.get(f"/jobs/{job_id}")) for job_id in deletion["jobs"]]
    (job,) = [j for j in jobs if j["kind"] == "approximate"]
    found: dict[str, Any] = job
    return found


def test_approximated_then_replaced_by_the_exact_retrain(api: Api, worker: InProcessWorker) -> None:
    rows = samples(N_SAMPLES)
    model_id = trained_model(api, worker, rows, APPROXIMATE)
    model = api.ok(api.get(f"/models/{model_id}"))
    assert (model["unlearning_policy"], model["approximate_method"]) == (
        "approximate_then_exact",
        "auto",
    )

    deletion = api.ok(api.delete(model_id, sample_ids=GONE), 202)
    assert deletion["status"] == "deactivated"
    assert _approximate_job(api, deletion)["status"] == "queued"
    # Kept for the pass, sealed: no plaintext row outlives the 202's transaction ...
    assert (_payloads(worker), _kept(worker)) == (N_SAMPLES - 2, 2)
    with worker.factory() as session:  # ... and the identifiers went at once
        deleted = session.scalars(sa.select(Sample).where(Sample.deleted.is_(True))).all()
        assert len(deleted) == 2 and all(s.external_id.startswith("deleted:") for s in deleted)
    cut = api.ok(api.get(f"/models/{model_id}/status"))
    assert any(q["valid_prefix"] < 2 for s in cut["shards"] for q in s["sequences"])
    assert cut["estimated_quality"]["approximate_depth"] == 0

    assert worker.approximate() == 1
    approximated = api.ok(api.get(f"/deletions/{deletion['id']}"))
    assert approximated["status"] == "approximated" and approximated["approximated_at"]
    job = _approximate_job(api, deletion)
    assert job["status"] == "succeeded" and job["error"].startswith("method ssd (auto: samples")
    assert (_payloads(worker), _kept(worker)) == (N_SAMPLES - 2, 0)  # purged once read
    status = api.ok(api.get(f"/models/{model_id}/status"))
    sequences = [q for s in status["shards"] for q in s["sequences"]]
    assert all(q["valid_prefix"] == 2 for q in sequences)  # full depth again
    assert any(q["exact_prefix"] < 2 for q in sequences)
    assert status["estimated_quality"]["approximate_depth"] > 0
    assert any(s["serving"]["approximate_stages"] for s in status["shards"])
    served = api.ok(api.post(f"/models/{model_id}/predict", {"texts": ["good thing"]}))
    assert any(s["approximate_stages"] for s in served["shards"])
    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    assert certificate["unlearning"] == "approximate" and certificate["payloads_deleted"]
    assert certificate["payloads_purged_at"] and certificate["approximated_at"]
    approximate_layers = certificate["layers_approximated"]
    assert approximate_layers and all(
        layer["served"] and layer["method"] == "ssd" for layer in approximate_layers
    )
    actions = [e["action"] for e in _actions(api, model_id)]
    assert actions.index("payloads.purged") < actions.index("layers.approximated")

    worker.drain()  # the exact retrains
    done = api.ok(api.get(f"/deletions/{deletion['id']}"))
    assert done["status"] == "completed"
    assert done["approximated_at"] < done["retraining_at"] < done["completed_at"]
    status = api.ok(api.get(f"/models/{model_id}/status"))
    assert all(
        q["valid_prefix"] == q["exact_prefix"] == 2
        for s in status["shards"]
        for q in s["sequences"]
    )
    assert status["estimated_quality"]["approximate_depth"] == 0
    reference = trained_without(worker.engine, model, rows, set(GONE))
    assert active_digests(worker, model_id) == reference
    with worker.factory() as session:
        states = session.scalars(sa.select(Layer.state).where(Layer.approximate.is_(True))).all()
        # Superseded by the served orders' retrains; the parked orders' withdrawn when the
        # deletion completed (tests/integration/pipeline/test_completed_withdraws_...).
        assert states and set(states) <= {LayerState.superseded, LayerState.discarded}
    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    assert certificate["unlearning"] == "exact"
    assert not any(layer["served"] for layer in certificate["layers_approximated"])
    assert {layer["artifact"] for layer in certificate["layers_retrained"]} <= reference


def test_a_pass_never_replaces_the_exact_retrain(api: Api, worker: InProcessWorker) -> None:
    rows = samples(N_SAMPLES)
    model_id = trained_model(api, worker, rows, APPROXIMATE)
    deletion = api.ok(api.delete(model_id, sample_ids=GONE), 202)
    worker.drain()  # the exact retrain lands first
    assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "completed"
    assert _kept(worker) == 0  # completion purged what the pass did not read

    assert worker.approximate() == 1
    job = _approximate_job(api, deletion)
    assert job["status"] == "cancelled" and "purged" in job["error"]
    model = api.ok(api.get(f"/models/{model_id}"))
    assert active_digests(worker, model_id) == trained_without(
        worker.engine, model, rows, set(GONE)
    )


def test_a_pass_only_edits_layers_no_other_deletion_touched(
    api: Api, worker: InProcessWorker
) -> None:
    rows = samples(N_SAMPLES)
    model_id = trained_model(api, worker, rows, APPROXIMATE)
    shard_of = {r["external_id"]: assign(model_id, r["external_id"], 2, 2)[0] for r in rows}
    first, second = [i for i, s in shard_of.items() if s == 0][:2]
    one = api.ok(api.delete(model_id, sample_ids=[first]), 202)
    two = api.ok(api.delete(model_id, sample_ids=[second]), 202)
    assert worker.approximate() <= 2
    job = _approximate_job(api, one)  # its layers saw the second sample too: left to the retrain
    assert job["status"] == "cancelled" and "sequence" in job["error"]
    with worker.factory() as session:
        assert not session.scalar(
            sa.select(sa.func.count()).select_from(Layer).where(Layer.approximate.is_(True))
        )
    worker.drain()
    for deletion in (one, two):
        assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "completed"


class TestDeadline:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"approximate_purge_deadline_s": 1e-6})

    def test_unread_payloads_are_purged_and_the_deletion_is_exact(
        self, api: Api, worker: InProcessWorker
    ) -> None:
        rows = samples(N_SAMPLES)
        model_id = trained_model(api, worker, rows, APPROXIMATE)
        deletion = api.ok(api.delete(model_id, sample_ids=GONE), 202)
        with worker.factory() as session:
            assert purge_overdue(session) == 1
            session.commit()
        assert (_payloads(worker), _kept(worker)) == (N_SAMPLES - 2, 0)
        purged = [e for e in _actions(api, model_id) if e["action"] == "payloads.purged"]
        assert [e["payload"]["reason"] for e in purged] == ["deadline"]
        assert worker.approximate() == 1
        assert _approximate_job(api, deletion)["status"] == "cancelled"
        assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "deactivated"
        worker.drain()
        assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "completed"
        certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
        assert certificate["unlearning"] == "exact" and not certificate["layers_approximated"]


class TestAuto:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"auto_approximate_wait_s": 0.0})  # any backlog

    def test_approximates_only_behind_a_backlog(self, api: Api, worker: InProcessWorker) -> None:
        rows = samples(N_SAMPLES)
        model_id = trained_model(api, worker, rows, {"unlearning_policy": "auto"})
        quiet = api.ok(api.delete(model_id, sample_ids=GONE[:1]), 202)
        assert not [
            j for j in quiet["jobs"] if api.ok(api.get(f"/jobs/{j}"))["kind"] == "approximate"
        ]
        assert _payloads(worker) == N_SAMPLES - 1  # exact only: purged with the deactivation
        worker.drain()

        other = api.ok(api.post("/models", TINY_MODEL), 201)["id"]  # 4 queued training jobs
        api.ok(api.post(f"/models/{other}/samples", {"samples": samples(8)}))
        api.ok(api.post(f"/models/{other}/train"), 202)
        busy = api.ok(api.delete(model_id, sample_ids=GONE[1:]), 202)
        assert _approximate_job(api, busy)["status"] == "queued"


def test_a_method_that_does_not_fit_the_model_is_a_422(api: Api) -> None:
    body = {
        **TINY_MODEL,
        "labels": None,
        "task": "regression",
        "approximate_method": "random_labels",
    }
    response = api.post("/models", body)
    assert response.status_code == 422 and "random_labels" in response.json()["detail"]
    response = api.post("/models", {**TINY_MODEL, "unlearning_policy": "sometimes"})
    assert response.status_code == 422


#: Methods that forget whole classes only: tests/integration/pipeline/test_api_class_deletions.py.
CLASSIFICATION_METHODS = [
    s.name
    for s in registry.specs()
    if s.unfit(Task.CLASSIFICATION, Modality.TEXT) is None and s.forgets != "whole_classes"
]


@pytest.mark.parametrize("method", CLASSIFICATION_METHODS, ids=str)
def test_a_deletion_may_choose_its_method(api: Api, worker: InProcessWorker, method: str) -> None:
    """On a model under the `exact` policy, a request's `method` asks for a pass with it."""
    model_id = trained_model(api, worker, samples(N_SAMPLES))
    one_class = ["s003", "s011"]  # both `pos`: the class method needs another class to remain
    deletion = api.ok(api.delete(model_id, sample_ids=one_class, method=method), 202)
    assert worker.approximate() == 1
    assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "approximated"
    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    methods = {layer["method"] for layer in certificate["layers_approximated"]}
    assert methods == {method}
    worker.drain()
    assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "completed"


def test_a_method_that_does_not_fit_the_request_is_a_422(api: Api, worker: InProcessWorker) -> None:
    model_id = trained_model(api, worker, samples(N_SAMPLES))
    response = api.delete(model_id, sample_ids=GONE, method="blindspot")
    assert response.status_code == 422 and "regression" in response.json()["detail"]
    assert api.delete(model_id, sample_ids=GONE, method="nope").status_code == 422
    assert api.ok(api.get("/deletions"))["items"] == [], "nothing was recorded"


def test_a_pass_the_data_does_not_suit_is_left_to_the_exact_retrain(
    api: Api, worker: InProcessWorker
) -> None:
    """Concept poisoning relabels the forgotten class with another: with both classes of a
    two-class model in the forget set it cannot, and the exact retrain alone unlearns."""
    rows = samples(N_SAMPLES)
    model_id = trained_model(api, worker, rows)
    shard = {r["external_id"]: assign(model_id, r["external_id"], 2, 2)[0] for r in rows}
    both = [  # one `neg` and one `pos` sample of shard 0: its sequences forget both classes
        next(r["external_id"] for r in rows if shard[r["external_id"]] == 0 and r["label"] == c)
        for c in ("neg", "pos")
    ]
    deletion = api.ok(api.delete(model_id, sample_ids=both, method="concept_poisoning"), 202)
    assert worker.approximate() == 1
    job = _approximate_job(api, deletion)
    assert job["status"] == "cancelled" and "left to the exact retrain" in job["error"]
    assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "deactivated"
    worker.drain()
    assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "completed"


def _params(worker: InProcessWorker, job_id: str) -> dict[str, Any]:
    with worker.factory() as session:
        params: dict[str, Any] = session.get_one(Job, uuid.UUID(job_id)).params
        return params


def test_a_method_config_reaches_the_pass(
    api: Api, worker: InProcessWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model's `method_config` and a request's over it (setting by setting): validated when
    the request arrives, recorded with the job, and the pass runs with it."""
    used: list[SSDConfig] = []
    original = ssd_module.ssd

    def spy(*args: Any, **kwargs: Any) -> Any:
        used.append(kwargs.get("config") or args[3])
        return original(*args, **kwargs)

    monkeypatch.setattr(ssd_module, "ssd", spy)
    model_settings = {"approximate_method": "ssd", "method_config": {"alpha": 5, "dampening": 0.5}}
    model_id = trained_model(api, worker, samples(N_SAMPLES), model_settings)
    deletion = api.ok(api.delete(model_id, sample_ids=GONE, method_config={"alpha": 2.5}), 202)
    assert deletion["status"] == "deactivated"  # the policy is exact: `method` asks for a pass,
    assert not any(  # a config alone does not
        api.ok(api.get(f"/jobs/{j}"))["kind"] == "approximate" for j in deletion["jobs"]
    )
    worker.drain()
    deletion = api.ok(
        api.delete(model_id, sample_ids=["s005"], method="ssd", method_config={"alpha": 2.5}), 202
    )
    job = _approximate_job(api, deletion)
    expected = SSDConfig(alpha=2.5, dampening=0.5)
    params = _params(worker, job["id"])
    assert params["method"] == "ssd"
    assert params["method_config"] == dataclasses.asdict(expected)
    assert worker.approximate() == 1
    assert used and set(used) == {expected}
    job = _approximate_job(api, deletion)
    assert job["status"] == "succeeded", job
    assert "`ssd`, named by the request or the model, with alpha=2.5, dampening=0.5" in job["error"]
    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    assert {layer["method_reason"] for layer in certificate["layers_approximated"]} == {
        "`ssd`, named by the request or the model, with alpha=2.5, dampening=0.5"
    }

    # Another method than the model's: the model's settings are not its own.
    worker.drain()
    other = api.ok(api.delete(model_id, sample_ids=["s007"], method="iau"), 202)
    other_params = _params(worker, _approximate_job(api, other)["id"])
    assert other_params["method"] == "iau"
    assert other_params["method_config"] == dataclasses.asdict(IAUConfig())


@pytest.mark.parametrize(
    ("target", "mentions"),
    [
        ({"method": "ssd", "method_config": {"alpha": "x"}}, "`alpha` must be a finite number"),
        ({"method": "ssd", "method_config": {"alpha": 0}}, "`alpha` must be positive"),
        ({"method": "ssd", "method_config": {"lr": 0.1}}, "`lr` is not a setting of `ssd`"),
        ({"method": "iau", "method_config": {"batch_size": 1.5}}, "`batch_size` must be an"),
        ({"method": "auto", "method_config": {"alpha": 5}}, "`auto` chooses"),
        ({"method_config": {"alpha": 5}}, "`auto` chooses"),  # the model's method is `auto`
        ({"method": "ssd", "method_config": ["alpha"]}, "method_config"),
    ],
)
def test_a_bad_method_config_is_a_422(
    api: Api, worker: InProcessWorker, target: dict[str, Any], mentions: str
) -> None:
    model_id = trained_model(api, worker, samples(N_SAMPLES))
    body = problem(api.delete(model_id, sample_ids=GONE, **target), 422)
    assert mentions in str(body), body
    assert api.ok(api.get("/deletions"))["items"] == [], "nothing was recorded"
