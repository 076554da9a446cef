"""The `unlearn` CLI as a newcomer runs it: migrate, serve, a real worker on Redis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from service.settings import Settings
from tests.integration.services import free_port, require_redis, stop, unlearn, wait_for
from workers.celery_app import create_celery


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_db_upgrade_tenant_and_key(tmp_path: Path) -> None:
    env = {"UNLEARN_DATA_DIR": str(tmp_path)}
    assert _run(["db", "upgrade"], env).returncode == 0
    assert (tmp_path / "lineage.sqlite3").exists()
    created = _run(["tenants", "create", "acme"], env)
    assert created.returncode == 0, created.stderr
    again = _run(["tenants", "create", "acme"], env)
    assert again.returncode != 0 and "exists" in again.stderr and "Traceback" not in again.stderr
    key = _run(["keys", "create", "--tenant", "acme", "--role", "admin"], env)
    assert key.returncode == 0 and key.stdout.startswith("ul_")
    missing = _run(["keys", "create", "--tenant", "nobody"], env)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr


def test_serve_answers_health_on_embedded_defaults(tmp_path: Path) -> None:
    env = {"UNLEARN_DATA_DIR": str(tmp_path)}
    assert _run(["db", "upgrade"], env).returncode == 0
    port = free_port()
    server = unlearn(["serve", "--port", str(port)], env)
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, 60, "the API to answer /healthz")
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert ready.status_code == 200, ready.text
    finally:
        stop(server)


def test_worker_consumes_from_redis(tmp_path: Path) -> None:
    broker = require_redis()
    env = {"UNLEARN_DATA_DIR": str(tmp_path), "UNLEARN_BROKER_URL": broker}
    worker = unlearn(["worker"], env)
    app = create_celery(Settings(data_dir=tmp_path, broker_url=broker))
    try:
        wait_for(lambda: bool(app.control.ping(timeout=0.5)), 60, "the worker to answer a ping")
    finally:
        output = stop(worker)
        app.close()
    assert "deletions" in output and "training" in output  # it consumes both queues


def test_bad_configuration_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    result = _run(["db", "upgrade"], {"UNLEARN_DATA_DIR": str(tmp_path), "UNLEARN_PORT": "abc"})
    assert result.returncode != 0
    assert "invalid configuration" in result.stderr and "Traceback" not in result.stderr
