"""The service on an S3 artifact store (moto's server on loopback): the API process's engine
(``build_engine``), the jobs and artifact collection all go through ``artifact_store(settings)``,
so a model trains, serves, unlearns and collects with nothing in a local folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.engine import artifact_store, build_engine
from service.settings import Settings
from tests.conftest import FreshDatabase
from tests.integration.api import TINY_BASE, Api, InProcessWorker, problem, samples, trained_model
from tests.integration.pipeline.test_artifact_collection import live
from tests.integration.s3 import S3Server
from tests.integration.services import free_port
from unlearning.artifacts import ref_digest
from unlearning.object_store import S3ArtifactStore

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(
    fresh_db: FreshDatabase, tmp_path: Path, tiny_dir: Path, s3_server: S3Server, s3_bucket: str
) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=fresh_db.url(),
        backbone_path=tiny_dir,
        default_base_model=TINY_BASE,
        artifacts_url=s3_server.url(s3_bucket, "unlearn"),
        s3_endpoint_url=s3_server.endpoint_url,
    )


def in_bucket(s3_server: S3Server, bucket: str) -> set[str]:
    """The references of the bucket's objects, checked against the store's key layout."""
    keys = s3_server.keys(bucket)
    refs = {f"sha256:{key.rsplit('/', 1)[1]}" for key in keys}
    assert keys == sorted(f"unlearn/{ref_digest(r)[:2]}/{ref_digest(r)}" for r in refs)
    return refs


def test_train_serve_unlearn_and_collect_on_s3(
    api: Api, worker: InProcessWorker, settings: Settings, s3_server: S3Server, s3_bucket: str
) -> None:
    assert isinstance(worker.engine.store, S3ArtifactStore)
    model_id = trained_model(api, worker, samples(24))
    trained = in_bucket(s3_server, s3_bucket)
    assert trained and trained == live(worker)
    assert settings.artifacts_dir is not None and not settings.artifacts_dir.exists()

    # The API process's own engine reads the stages from the bucket to answer.
    engine = build_engine(settings)
    assert isinstance(engine.store, S3ArtifactStore) and engine.store is artifact_store(settings)
    prediction = api.ok(api.post(f"/models/{model_id}/predict", {"texts": ["good", "bad"]}))
    assert len(prediction["predictions"]) == 2 and len(prediction["shards"]) == 2

    deletion = api.ok(api.delete(model_id, sample_ids=["s003"]), 202)
    assert worker.drain() >= 1
    assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "completed"
    # the layers it cut (a completed deletion withdraws them: `discarded`, no longer `invalidated`)
    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    dead = {layer["artifact"] for layer in certificate["layers_invalidated"]}
    assert dead and not dead & in_bucket(s3_server, s3_bucket), "collected from the bucket"
    assert in_bucket(s3_server, s3_bucket) == live(worker)
    after = api.ok(api.post(f"/models/{model_id}/predict", {"texts": ["good", "bad"]}))
    assert len(after["predictions"]) == 2
    assert api.ok(api.get("/readyz"))["checks"]["artifacts"] == "ok"


def test_a_store_outage_is_a_503_problem_not_a_500(
    api: Api, worker: InProcessWorker, settings: Settings, keys: dict[str, str]
) -> None:
    """Trained on the bucket; then an API process whose store does not answer predicts."""
    model_id = trained_model(api, worker, samples(24))
    unreachable = settings.model_copy(
        update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}", "s3_max_attempts": 1}
    )
    with TestClient(create_app(unreachable), raise_server_exceptions=False) as client:
        response = Api(client, keys["a"]).post(f"/models/{model_id}/predict", {"texts": ["good"]})
    body = problem(response, 503)
    assert body["type"].endswith("/artifact-store-unavailable"), body
