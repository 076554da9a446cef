"""``/metrics`` (SQLite and PostgreSQL, jobs run in this process): a scrape before and after a
deletion and its retrain sees the counters, gauges and histograms move."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from service.app import create_app
from service.settings import Settings
from tests.conftest import FreshDatabase
from tests.integration.api import Api, InProcessWorker, samples, trained_model

pytestmark = pytest.mark.integration
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples_: Samples, name: str, **labels: str) -> float:
    return samples_.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_deletion_moves_the_metrics(
    api: Api, client: TestClient, worker: InProcessWorker
) -> None:
    model_id = trained_model(api, worker, samples(24))
    api.ok(api.post(f"/models/{model_id}/predict", {"texts": ["good", "bad"]}))
    before = scrape(client)
    assert value(before, "unlearn_lineage_up") == 1
    assert value(before, "unlearn_layers", model_id=model_id, state="active") == 8
    assert value(before, "unlearn_layers", model_id=model_id, state="invalidated") == 0
    assert value(before, "unlearn_predictions_total") >= 2
    assert value(before, "unlearn_model_live_shards_ratio", model_id=model_id) == 1.0
    assert value(before, "unlearn_model_served_depth_ratio", model_id=model_id) == 1.0

    deletion = api.ok(api.delete(model_id, sample_ids=["s003"]), 202)
    api.ok(api.post(f"/models/{model_id}/predict", {"texts": ["good"]}))
    during = scrape(client)
    status = api.ok(api.get(f"/models/{model_id}/status"))
    n_jobs = status["pending_retrains"]  # the deletion's, and the parked orders'
    assert n_jobs >= len(deletion["jobs"])
    assert (
        value(during, "unlearn_deletion_requests_total")
        == value(before, "unlearn_deletion_requests_total") + 1
    )
    assert value(during, "unlearn_deletions", status="deactivated") == 1
    assert value(during, "unlearn_queue_depth", queue="training", state="queued") == n_jobs
    assert value(during, "unlearn_layers", model_id=model_id, state="invalidated") >= 1
    assert value(during, "unlearn_deletion_deactivation_seconds_count") == 1
    assert 0 < value(during, "unlearn_deletion_deactivation_seconds_sum") < 30
    assert value(during, "unlearn_deletion_completion_seconds_count") == 0
    live_shards = status["estimated_quality"]["live_shards"]
    assert value(during, "unlearn_model_live_shards_ratio", model_id=model_id) == live_shards
    assert value(during, "unlearn_model_served_depth_ratio", model_id=model_id) < 1.0
    assert (
        value(during, "unlearn_predictions_total") == value(before, "unlearn_predictions_total") + 1
    )
    route = {"method": "POST", "route": "/deletions"}
    assert value(during, "unlearn_http_requests_total", **route, status="202") >= 1
    assert value(during, "unlearn_http_request_seconds_count", **route) >= 1

    worker.drain()
    after = scrape(client)
    assert value(after, "unlearn_deletions", status="deactivated") == 0
    assert value(after, "unlearn_deletions", status="completed") == 1
    assert value(after, "unlearn_queue_depth", queue="training", state="queued") == 0
    assert value(after, "unlearn_deletion_completion_seconds_count") == 1
    assert value(after, "unlearn_deletion_completion_seconds_bucket", le="+Inf") == 1
    assert value(after, "unlearn_retrain_seconds_count") == n_jobs
    assert value(after, "unlearn_layers", model_id=model_id, state="active") == 8
    assert value(after, "unlearn_model_served_depth_ratio", model_id=model_id) == 1.0


@pytest.fixture
def guarded(fresh_db: FreshDatabase, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path, database_url=fresh_db.url(), metrics_token=SecretStr("scrape-me")
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_the_metrics_token_guards_the_scrape(guarded: TestClient) -> None:
    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    ok = guarded.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert ok.status_code == 200 and "unlearn_deletions" in ok.text
