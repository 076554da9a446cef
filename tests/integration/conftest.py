"""HTTP fixtures: a migrated database of its own per test (SQLite and PostgreSQL), keys of two
tenants and a client on the app. A module overrides ``settings`` when it needs other settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.conftest import FreshDatabase
from tests.integration.api import issue_keys
from tests.integration.s3 import S3Server


@pytest.fixture
def settings(fresh_db: FreshDatabase, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, database_url=fresh_db.url())


@pytest.fixture
def keys(settings: Settings) -> dict[str, str]:
    """An app key of tenant a, and an app key of tenant b."""
    return issue_keys(settings)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server in a child process on loopback, for the session (buckets per test)."""
    with S3Server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket on the S3 server; the test's environment holds the server's credentials."""
    for name, value in s3_server.credentials().items():
        monkeypatch.setenv(name, value)
    return s3_server.create_bucket()
