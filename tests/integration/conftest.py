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
