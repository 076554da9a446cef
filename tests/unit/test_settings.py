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
