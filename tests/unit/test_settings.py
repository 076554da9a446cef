"""Settings: embedded defaults need no server; variables switch to real servers."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("UNLEARN_"):
            monkeypatch.delenv(name)


def test_defaults_are_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.database_url == f"sqlite:///{tmp_path / 'var' / 'lineage.sqlite3'}"
    assert settings.broker_url == f"sqla+sqlite:///{tmp_path / 'var' / 'broker.sqlite3'}"
    assert settings.artifacts_dir == tmp_path / "var" / "artifacts"
    assert settings.uses_sqlite


def test_environment_switches_to_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNLEARN_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/test")
    monkeypatch.setenv("UNLEARN_BROKER_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("UNLEARN_PORT", "9000")
    settings = Settings()
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.port == 9000 and not settings.uses_sqlite


def test_production_refuses_embedded_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNLEARN_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="production"):
        Settings()


def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNLEARN_PORT", "70000")
    with pytest.raises(ValidationError, match="port"):
        Settings()


def test_artifacts_url_selects_an_object_store(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.engine import artifact_store
    from unlearning.artifacts import LocalArtifactStore
    from unlearning.object_store import S3ArtifactStore

    assert isinstance(artifact_store(Settings()), LocalArtifactStore)
    monkeypatch.setenv("UNLEARN_ARTIFACTS_URL", "s3://unlearn-artifacts/prod/")
    monkeypatch.setenv("UNLEARN_S3_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("UNLEARN_S3_MAX_ATTEMPTS", "2")
    store = artifact_store(Settings())
    assert isinstance(store, S3ArtifactStore)
    assert (store.bucket, store.prefix, store.max_attempts) == ("unlearn-artifacts", "prod", 2)
    assert store.client.meta.endpoint_url == "http://minio:9000"
    retries = getattr(store.client.meta.config, "retries", None)  # not in the stubs
    assert retries == {"mode": "standard", "total_max_attempts": 2}
    assert store is artifact_store(Settings()), "one client per process and configuration"


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("/var/lib/unlearn/artifacts", "not an s3:// URL"),
        ("http://minio:9000/bucket", "not an s3:// URL"),
        ("s3://", "names no valid bucket"),
        ("s3://Upper_Case", "names no valid bucket"),
        ("s3://ab/prefix", "names no valid bucket"),
        ("s3://bucket/prefix?versionId=1", "no query or fragment"),
    ],
)
def test_a_bad_artifacts_url_is_refused(
    url: str, error: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNLEARN_ARTIFACTS_URL", url)
    with pytest.raises(ValidationError, match=error):
        Settings()
