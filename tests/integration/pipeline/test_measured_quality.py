"""Measured quality over HTTP on SQLite and PostgreSQL, jobs run in this process.

A model's evaluation split (`split: "eval"`) is measured after every change to what it serves:
the status shows the measurement next to the proxy, for the generation it measured, and its
value is what the served model answers on those rows (checked here against predictions asked
over the API). Each approximate pass is measured while it serves and graded once its exact
retrain serves; a method broken on purpose gets bad grades and `auto` stops choosing it for the
model, while a good one keeps being chosen.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.approximation import runner as approximation_runner
from service.db.models import KeptSamples, Role, Sample, SamplePayload
from service.settings import Settings, get_settings
from tests.integration.api import (
    TINY_MODEL,
    Api,
    InProcessWorker,
    issue_keys,
    samples,
    trained_model,
)
from tests.integration.pipeline.test_dashboard import login
from tests.integration.pipeline.test_metrics import scrape, value
from unlearning.approx import prefix_pass
from unlearning.s3t.weights import StageWeights

pytestmark = pytest.mark.integration
LEARNS = {"epochs_per_stage": 12, "learning_rate": 2e-2}  # the tiny model learns the words
EVAL = samples(20, prefix="e", split="eval")


def _texts_and_labels(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    return [r["text"] for r in rows], [r["label"] for r in rows]


def _served_accuracy(api: Api, model_id: str, rows: list[dict[str, Any]]) -> float:
    """What the model answers now on ``rows``, computed from predictions over the API."""
    texts, labels = _texts_and_labels(rows)
    answer = api.ok(api.post(f"/models/{model_id}/predict", {"texts": texts}))
    right: int = sum(p["label"] == y for p, y in zip(answer["predictions"], labels, strict=True))
    return 100 * right / len(rows)


def test_quality_is_measured_after_every_change(api: Api, worker: InProcessWorker) -> None:
    model_id = trained_model(api, worker, samples(24) + EVAL, LEARNS)
    status = api.ok(api.get(f"/models/{model_id}/status"))
    assert status["measured_quality"] is None  # not measured yet
    assert worker.measure() == 1
    assert worker.measure() == 0  # nothing changed since
    status = api.ok(api.get(f"/models/{model_id}/status"))
    measured = status["measured_quality"]
    assert measured["current"] and measured["serving_generation"] == status["serving_generation"]
    assert (measured["metric"], measured["n_eval"]) == ("accuracy", 20)
    assert measured["value"] == pytest.approx(_served_accuracy(api, model_id, EVAL))
    assert measured["value"] > 60  # it learned: a measurement that could fail
    assert (measured["live_shards"], measured["served_depth"]) == (1.0, 1.0)

    # A deletion changes what is served: the measurement is stale until it is measured again.
    api.ok(api.delete(model_id, sample_ids=["s003"]), 202)
    stale = api.ok(api.get(f"/models/{model_id}/status"))["measured_quality"]
    assert not stale["current"]
    assert worker.measure() == 1
    status = api.ok(api.get(f"/models/{model_id}/status"))
    assert status["measured_quality"]["serving_generation"] == status["serving_generation"]
    assert status["measured_quality"]["served_depth"] < 1.0  # the proxy at that generation
    assert status["measured_quality"]["value"] == pytest.approx(
        _served_accuracy(api, model_id, EVAL)
    )
    worker.drain()  # the retrain serves again: one more measurement
    assert worker.measure() == 1

    # Deleting an evaluation sample takes it out of the evaluation.
    api.ok(api.delete(model_id, sample_ids=["e000"]), 202)
    assert worker.measure() == 1
    report = api.ok(api.get(f"/models/{model_id}/quality"))
    assert report["eval_samples"] == 19 and report["latest"]["n_eval"] == 19
    assert report["latest"]["value"] == pytest.approx(_served_accuracy(api, model_id, EVAL[1:]))
    generations = [m["serving_generation"] for m in report["measurements"]]
    assert generations == sorted(generations, reverse=True) and len(generations) == 4


def test_metrics_show_the_latest_measurement_and_its_lag(
    api: Api, client: TestClient, worker: InProcessWorker
) -> None:
    model_id = trained_model(api, worker, samples(24) + EVAL, LEARNS)
    assert worker.measure() == 1
    measured = api.ok(api.get(f"/models/{model_id}/quality"))["latest"]
    scraped = scrape(client)
    quality = value(scraped, "unlearn_model_measured_quality", model_id=model_id, metric="accuracy")
    assert quality == pytest.approx(measured["value"]) and quality > 0
    assert value(scraped, "unlearn_model_measured_generations_behind", model_id=model_id) == 0
    api.ok(api.delete(model_id, sample_ids=["s003"]), 202)
    behind = value(scrape(client), "unlearn_model_measured_generations_behind", model_id=model_id)
    assert behind == 1


def test_evaluation_rows_are_never_trained_on(api: Api, worker: InProcessWorker) -> None:
    model_id = trained_model(api, worker, samples(24) + EVAL)
    rows = samples(2, prefix="f", split="eval")
    stored = api.ok(api.post(f"/models/{model_id}/samples", {"samples": rows}))
    assert (stored["stored"], stored["eval_samples"]) == (2, 22)
    balance = api.ok(api.get(f"/models/{model_id}/status"))
    assert sum(s["deleted_samples"] for s in balance["shards"]) == 0
    # Deleting every evaluation row invalidates no layer: none trained on them.
    deletion = api.ok(api.delete(model_id, sample_ids=[r["external_id"] for r in EVAL]), 202)
    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    assert certificate["layers_invalidated"] == [] and certificate["status"] == "completed"


def _broken_ssd(monkeypatch: pytest.MonkeyPatch) -> None:
    """SSD broken on purpose: its edited stages answer the opposite class, loudly enough to
    outvote the other shard in the ensemble's mean."""
    real = prefix_pass.approximate_stages

    def approximate_stages(*args: Any, **kwargs: Any) -> list[StageWeights]:
        edited: list[StageWeights] = real(*args, **kwargs)
        if args[6] != "ssd":
            return edited
        return [
            dataclasses.replace(s, head_weight=-10 * s.head_weight, head_bias=-10 * s.head_bias)
            for s in edited
        ]

    monkeypatch.setattr(approximation_runner, "approximate_stages", approximate_stages)


def _delete_and_settle(api: Api, worker: InProcessWorker, model_id: str, sample: str) -> str:
    """One deletion under `approximate_then_exact`: its pass, its retrains, the measurement
    after them; returns the method its pass ran."""
    deletion = api.ok(api.delete(model_id, sample_ids=[sample]), 202)
    jobs = [api.ok(api.get(f"/jobs/{job_id}")) for job_id in deletion["jobs"]]
    (approximate,) = [j for j in jobs if j["kind"] == "approximate"]
    assert worker.approximate() == 1
    worker.drain()
    assert worker.measure() == 1
    done = api.ok(api.get(f"/deletions/{deletion['id']}"))
    assert done["status"] == "completed"
    note: str = api.ok(api.get(f"/jobs/{approximate['id']}"))["error"]
    return note.split(" ", 2)[1]  # "method ssd (auto: ...)"


def test_a_broken_method_is_graded_badly_and_auto_stops_choosing_it(
    api: Api,
    worker: InProcessWorker,
    monkeypatch: pytest.MonkeyPatch,
    client: TestClient,
    settings: Settings,
) -> None:
    _broken_ssd(monkeypatch)
    policy = {**LEARNS, "unlearning_policy": "approximate_then_exact"}
    model_id = trained_model(api, worker, samples(40) + EVAL, policy)
    assert worker.measure() == 1
    chosen = [_delete_and_settle(api, worker, model_id, f"s{i:03d}") for i in (3, 8, 13)]
    assert chosen == ["ssd", "ssd", "ssd"]  # the rule, until the method has three grades
    report = api.ok(api.get(f"/models/{model_id}/quality"))
    assert "evaluation split alone" in report["note"]
    (ssd,) = report["methods"]
    assert (ssd["method"], ssd["grades"]) == ("ssd", 3)
    assert ssd["mean_gap"] > 5.0, report["grades"]  # far from its exact retrains
    assert all(g["grade"]["agreement"] < 50 and not g["with_deleted"] for g in report["grades"])
    chosen = [_delete_and_settle(api, worker, model_id, f"s{i:03d}") for i in (18, 23, 28)]
    assert chosen == ["iau", "iau", "iau"]
    report = api.ok(api.get(f"/models/{model_id}/quality"))
    iau = next(m for m in report["methods"] if m["method"] == "iau")
    assert iau["grades"] == 3 and iau["mean_gap"] <= 5.0, report["grades"]
    # The choice and its evidence are in the pass's note and in the certificate.
    deletion = api.ok(api.delete(model_id, sample_ids=["s033"]), 202)
    assert worker.approximate() == 1
    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    reasons = {layer["method_reason"] for layer in certificate["layers_approximated"]}
    (reason,) = reasons
    assert "graded: on this model, iau's" in reason and "ssd no longer chosen" in reason

    # The dashboard's model page shows the record and the latest measurement.
    login(client, issue_keys(settings, Role.admin)["a"])
    html = client.get(f"/dashboard/models/{model_id}?part=quality").text
    assert 'data-method="ssd" data-grades="3"' in html
    assert 'data-method="iau" data-grades="3"' in html and 'data-current="true"' in html


def _stored(worker: InProcessWorker, model_id: str) -> tuple[int, list[KeptSamples]]:
    """The model's deleted samples' plaintext payload rows, and the sealed ones kept."""
    with worker.factory() as session:
        plaintext = session.scalar(
            sa.select(sa.func.count())
            .select_from(SamplePayload)
            .join(Sample, Sample.id == SamplePayload.sample_id)
            .where(Sample.model_id == uuid.UUID(model_id), Sample.deleted.is_(True))
        )
        kept = session.scalars(
            sa.select(KeptSamples).where(KeptSamples.model_id == uuid.UUID(model_id))
        ).all()
        return plaintext or 0, list(kept)


def test_deleted_samples_are_kept_sealed_until_their_pass_is_graded(
    api: Api, worker: InProcessWorker
) -> None:
    """With `grade_approximations`, a deletion's samples outlive its pass (sealed) until the
    measurement that grades the pass on them, and not one step longer; their plaintext rows
    never outlive the 202's transaction."""
    policy = {**LEARNS, "unlearning_policy": "approximate_then_exact", "grade_approximations": True}
    model_id = trained_model(api, worker, samples(40) + EVAL, policy)
    assert api.ok(api.get(f"/models/{model_id}"))["grade_approximations"]
    assert worker.measure() == 1
    deletion = api.ok(api.delete(model_id, sample_ids=["s003", "s008"]), 202)
    plaintext, kept = _stored(worker, model_id)
    assert plaintext == 0 and [(k.n_samples, k.for_grading) for k in kept] == [(2, False)]
    assert b"item number 3" not in kept[0].sealed and not kept[0].key_wrapped

    assert worker.approximate() == 1  # the pass reads them, and keeps them for its grade
    assert [(k.n_samples, k.for_grading) for k in _stored(worker, model_id)[1]] == [(2, True)]
    worker.drain()
    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    assert certificate["status"] == "completed" and certificate["payloads_purged_at"] is None
    plaintext, kept = _stored(worker, model_id)
    assert plaintext == 0 and len(kept) == 1  # completion leaves them to the grading

    assert worker.measure() == 1  # grades the pass, then purges them
    assert _stored(worker, model_id) == (0, [])
    report = api.ok(api.get(f"/models/{model_id}/quality"))
    assert "and the deleted samples" in report["note"]
    (graded,) = report["grades"]
    assert graded["with_deleted"] and graded["grade"]["n_forget"] == 2
    assert graded["grade"]["ua_gap"] is not None and graded["grade"]["membership_auc"] is not None
    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    assert certificate["payloads_purged_at"] is not None and certificate["payloads_deleted"]
    audit = api.ok(api.get(f"/models/{model_id}/audit"))["entries"]
    purged = [e["payload"]["reason"] for e in audit if e["action"] == "payloads.purged"]
    assert purged == ["graded"]


def test_only_a_classifier_grades_on_its_deleted_samples(api: Api) -> None:
    body = {
        **TINY_MODEL,
        "task": "regression",
        "labels": None,
        "grade_approximations": True,
    }
    refused = api.post("/models", body)
    assert refused.status_code == 422, refused.text
    assert "grade_approximations" in refused.json()["detail"]


@pytest.fixture
def sealing_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """UNLEARN_SEALING_KEY set for this test (the process settings are read once: cleared)."""
    monkeypatch.setenv("UNLEARN_SEALING_KEY", base64.b64encode(os.urandom(32)).decode())
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.mark.usefixtures("sealing_key")
def test_with_a_sealing_key_the_data_key_is_sealed_too(api: Api, worker: InProcessWorker) -> None:
    model_id = trained_model(
        api, worker, samples(24), {"unlearning_policy": "approximate_then_exact"}
    )
    api.ok(api.delete(model_id, sample_ids=["s003"]), 202)
    (kept,) = _stored(worker, model_id)[1]
    assert kept.key_wrapped and len(kept.data_key) > 32
    assert worker.approximate() == 1  # it opens them under the same key
    assert _stored(worker, model_id) == (0, [])
