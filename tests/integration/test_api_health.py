"""The HTTP app on the embedded defaults: liveness, readiness, problem details."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.db import migrate
from service.settings import Settings
from tests.integration.s3 import S3Server


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path)
    migrate.upgrade(settings.database_url)
    return settings


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_checks_database_and_broker(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


def test_readyz_reports_an_unreachable_broker(settings: Settings) -> None:
    broken = settings.model_copy(
        update={"broker_url": "redis://127.0.0.1:1/0", "readiness_timeout_s": 1.0}
    )
    with TestClient(create_app(broken)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 503 and body["checks"] == {"database": "ok", "broker": "unreachable"}


def test_unknown_path_is_a_problem(client: TestClient) -> None:
    response = client.get("/no/such/path")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "Not Found"


def test_openapi_documents_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/healthz", "/readyz"} <= set(paths)


def test_readyz_checks_the_object_store(
    settings: Settings, s3_server: S3Server, s3_bucket: str
) -> None:
    on_s3 = settings.model_copy(
        update={
            "artifacts_url": s3_server.url(s3_bucket, "p"),
            "s3_endpoint_url": s3_server.endpoint_url,
        }
    )
    with TestClient(create_app(on_s3)) as client:
        assert client.get("/readyz").json()["checks"] == {
            "database": "ok",
            "broker": "ok",
            "artifacts": "ok",
        }
    missing = on_s3.model_copy(update={"artifacts_url": "s3://no-such-bucket"})
    with TestClient(create_app(missing)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["artifacts"] == "unreachable"
    assert "artifacts: ArtifactStoreError" in body["detail"]
