"""The deletion pipeline's fixtures: the app on the tiny backbone, jobs run in this process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service.db.engine import make_engine, make_session_factory
from service.db.models import Role
from service.engine import EngineCatalogue
from service.settings import Settings
from tests.conftest import FreshDatabase
from tests.integration.api import (
    TINY_BASE,
    Api,
    InProcessWorker,
    issue_keys,
    save_tiny_backbone,
)
from unlearning.families.testing import save_tiny_model


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_backbone(tmp_path_factory.mktemp("tiny-backbone"))


@pytest.fixture
def settings(fresh_db: FreshDatabase, tmp_path: Path, tiny_dir: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=fresh_db.url(),
        backbone_path=tiny_dir,
        default_base_model=TINY_BASE,
    )


@pytest.fixture
def worker(settings: Settings) -> Iterator[InProcessWorker]:
    worker = InProcessWorker(settings)
    yield worker
    worker.close()


@pytest.fixture
def api(client: TestClient, keys: dict[str, str]) -> Api:
    return Api(client, keys["a"])


@pytest.fixture
def admin(client: TestClient, settings: Settings) -> Api:
    """An admin key of tenant a (test_dashboard.py takes its token instead)."""
    return Api(client, issue_keys(settings, Role.admin)["a"])


@pytest.fixture
def db(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on the test's database, apart from the app's (to read what it committed)."""
    engine = make_engine(settings.database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (two blocks): the causal LM tests' base model."""
    return save_tiny_model("llama", tmp_path_factory.mktemp("tiny-llama") / "llama", n_layers=2)


@pytest.fixture
def llm_worker(settings: Settings) -> Iterator[InProcessWorker]:
    """A worker whose jobs load each model's registered base model (the tiny Llama's too)."""
    worker = InProcessWorker(settings, engines=EngineCatalogue(settings))
    yield worker
    worker.close()
