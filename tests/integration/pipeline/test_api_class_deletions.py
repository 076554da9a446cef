"""``POST /models/{id}/class-deletions`` (SQLite and PostgreSQL, jobs run in this process): the
whole class leaves the model through the normal pipeline, exactly or with a class-unlearning
pass first."""

from __future__ import annotations

import pytest

from tests.integration.api import TINY_MODEL, Api, InProcessWorker, problem, samples, trained_model

pytestmark = pytest.mark.integration
N_SAMPLES = 24
POSITIVE = N_SAMPLES // 2  # samples() labels every odd row `pos`


def _class_delete(api: Api, model_id: str, **body: object) -> dict[str, object]:
    response = api.post(f"/models/{model_id}/class-deletions", body)
    deletion: dict[str, object] = api.ok(response, 202)
    assert response.headers["location"] == f"/deletions/{deletion['id']}"
    return deletion


def test_the_exact_path_deletes_every_sample_of_the_class(
    api: Api, worker: InProcessWorker
) -> None:
    model_id = trained_model(api, worker, samples(N_SAMPLES))
    deletion = _class_delete(api, model_id, label="pos")
    assert deletion["status"] == "deactivated"
    assert deletion["counts"] == {
        "requested": POSITIVE,
        "deleted": POSITIVE,
        "already_deleted": 0,
        "unknown": 0,
    }
    jobs = [api.ok(api.get(f"/jobs/{job}")) for job in deletion["jobs"]]  # type: ignore[attr-defined]
    assert jobs and {job["kind"] for job in jobs} == {"retrain"}, "no approximate pass"
    worker.drain()
    assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "completed"
    status = api.ok(api.get(f"/models/{model_id}/status"))
    assert sum(s["deleted_samples"] for s in status["shards"]) == POSITIVE
    again = api.post(f"/models/{model_id}/class-deletions", {"label": "pos"})
    assert "no live sample" in problem(again, 409)["detail"]


@pytest.mark.parametrize("method", [None, "concept_poisoning", "refit_head"])
def test_the_approximate_path_runs_the_class_method_first(
    api: Api, worker: InProcessWorker, method: str | None
) -> None:
    """By default (`auto`) a whole class is suppressed: the model stops predicting it at once."""
    model_id = trained_model(api, worker, samples(N_SAMPLES))
    body = {"label": "neg", "path": "approximate"} | ({"method": method} if method else {})
    deletion = _class_delete(api, model_id, **body)
    assert worker.approximate() == 1
    assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "approximated"
    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    layers = certificate["layers_approximated"]
    assert {layer["method"] for layer in layers} == {method or "suppress_class"}
    if method is None:
        assert all(layer["method_reason"].startswith("auto: a whole class") for layer in layers)
        texts = [f"{word} thing {i}" for i in range(12) for word in ("good", "bad")]
        served = api.ok(api.post(f"/models/{model_id}/predict", {"texts": texts}))
        labels = {p["label"] for p in served["predictions"]}
        assert labels == {"pos"}, "the suppressed class is never predicted"
    worker.drain()
    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    assert certificate["unlearning"] == "exact" and certificate["counts"]["deleted"] == POSITIVE


def test_bad_class_deletions_are_problems(api: Api, worker: InProcessWorker) -> None:
    model_id = trained_model(api, worker, samples(N_SAMPLES))
    url = f"/models/{model_id}/class-deletions"
    assert "no label" in problem(api.post(url, {"label": "maybe"}), 422)["detail"]
    problem(api.post(url, {"label": "pos", "path": "sometimes"}), 422)
    blind = api.post(url, {"label": "pos", "method": "blindspot"})
    assert "regression" in problem(blind, 422)["detail"]
    problem(
        api.post("/models/00000000-0000-0000-0000-000000000000/class-deletions", {"label": "pos"}),
        404,
    )
    regression = api.ok(
        api.post("/models", {**TINY_MODEL, "labels": None, "task": "regression"}), 201
    )
    refused = api.post(f"/models/{regression['id']}/class-deletions", {"label": "pos"})
    assert "classification" in problem(refused, 422)["detail"]
    assert api.ok(api.get("/deletions"))["items"] == [], "nothing was recorded"
