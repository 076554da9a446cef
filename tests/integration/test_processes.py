"""The `unlearn` CLI as a newcomer runs it: migrate, serve, a real worker on Redis."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import torch

from service.settings import Settings
from tests.integration.api import save_tiny_backbone
from tests.integration.services import (
    answers,
    free_port,
    require_redis,
    run_cli,
    stop,
    unlearn,
    wait_for,
)
from unlearning.device import local_profile
from workers.celery_app import create_celery

# They start `unlearn` processes: one at a time beside the in-process tests (`make test`).
pytestmark = pytest.mark.xdist_group("processes")


def test_db_upgrade_tenant_and_key(tmp_path: Path) -> None:
    env = {"UNLEARN_DATA_DIR": str(tmp_path)}
    assert run_cli(["db", "upgrade"], env).returncode == 0
    assert (tmp_path / "lineage.sqlite3").exists()
    created = run_cli(["tenants", "create", "acme"], env)
    assert created.returncode == 0, created.stderr
    again = run_cli(["tenants", "create", "acme"], env)
    assert again.returncode != 0 and "exists" in again.stderr and "Traceback" not in again.stderr
    key = run_cli(["keys", "create", "--tenant", "acme", "--role", "admin"], env)
    assert key.returncode == 0 and key.stdout.startswith("ul_")
    missing = run_cli(["keys", "create", "--tenant", "nobody"], env)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr


def test_serve_answers_health_on_embedded_defaults(tmp_path: Path) -> None:
    env = {"UNLEARN_DATA_DIR": str(tmp_path)}
    assert run_cli(["db", "upgrade"], env).returncode == 0
    port = free_port()
    server = unlearn(["serve", "--port", str(port)], env)
    try:
        wait_for(
            functools.partial(answers, f"http://127.0.0.1:{port}/healthz"),
            60,
            "the API to answer /healthz",
        )
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert ready.status_code == 200, ready.text
    finally:
        stop(server)


def _presence(tmp_path: Path) -> list[tuple[str, str, list[str]]]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'lineage.sqlite3'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT name, compute_profile, queues FROM workers"))
            return [(name, profile, json.loads(queues)) for name, profile, queues in rows]
    finally:
        engine.dispose()


def test_worker_consumes_its_profiles_queues_from_redis_and_announces_itself(
    tmp_path: Path,
) -> None:
    broker = require_redis()
    env = {"UNLEARN_DATA_DIR": str(tmp_path), "UNLEARN_BROKER_URL": broker}
    assert run_cli(["db", "upgrade"], env).returncode == 0
    profile = run_cli(["profile"], env)
    assert profile.returncode == 0 and profile.stdout.strip() == local_profile("cpu")
    worker = unlearn(["worker"], env)
    app = create_celery(Settings(data_dir=tmp_path, broker_url=broker))
    try:
        wait_for(lambda: bool(app.control.ping(timeout=0.5)), 60, "the worker to answer a ping")
        wait_for(lambda: bool(_presence(tmp_path)), 30, "the worker's presence row")
        [(name, announced, queues)] = _presence(tmp_path)
        assert name.startswith("celery@") and announced == local_profile("cpu")
        assert queues == [f"deletions@{announced}", f"training@{announced}"]
    finally:
        output = stop(worker)
        app.close()
    assert f"deletions@{announced}" in output and f"training@{announced}" in output
    assert _presence(tmp_path) == []  # a clean shutdown leaves at once


def test_a_worker_asked_for_a_missing_gpu_says_so(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = run_cli(["worker"], {"UNLEARN_DATA_DIR": str(tmp_path), "UNLEARN_DEVICE": "cuda"})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "cannot use device 'cuda'" in result.stderr and "CUDA is not available" in result.stderr


def test_bad_configuration_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    result = run_cli(["db", "upgrade"], {"UNLEARN_DATA_DIR": str(tmp_path), "UNLEARN_PORT": "abc"})
    assert result.returncode != 0
    assert "invalid configuration" in result.stderr and "Traceback" not in result.stderr


def test_run_starts_its_workers_and_the_demo_on_embedded_defaults(tmp_path: Path) -> None:
    """`make run`'s command with no servers: the demo trains on the worker, then a deletion
    with an approximate pass is deactivated at once, approximated by the passes worker before
    its retrain starts, and completed by the training worker's retrain."""
    env = {
        "UNLEARN_DATA_DIR": str(tmp_path),
        "UNLEARN_BACKBONE_PATH": str(save_tiny_backbone(tmp_path / "tiny")),
        "UNLEARN_RELAY_INTERVAL_S": "0.2",
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = unlearn(["run", "--port", str(port)], env)
    try:
        demo: dict[str, str] = wait_for(
            lambda: _read_json(tmp_path / "demo.json"), 120, "the demo to be seeded"
        )
        headers = {"Authorization": f"Bearer {demo['api_key']}"}
        model = f"{base}/models/{demo['model_id']}"

        def status(url: str) -> str:
            try:
                return str(httpx.get(url, headers=headers).json()["status"])
            except (httpx.TransportError, KeyError):
                return ""

        wait_for(lambda: status(model) == "ready", 180, "the demo model to train")
        predicted = httpx.post(f"{model}/predict", json={"texts": ["a cup final"]}, headers=headers)
        assert predicted.status_code == 200 and predicted.json()["predictions"][0]["label"]

        def measured() -> dict[str, Any] | None:
            found: dict[str, Any] | None = httpx.get(f"{model}/status", headers=headers).json()[
                "measured_quality"
            ]
            return found

        # Housekeeping queues the measurement of its evaluation split; the training worker runs it.
        quality = wait_for(measured, 120, "the demo's quality to be measured")
        assert quality["metric"] == "accuracy" and quality["n_eval"] == 48
        deletion = httpx.post(
            f"{base}/deletions",
            json={"model_id": demo["model_id"], "subject_id": "user-07", "method": "auto"},
            headers=headers,
        ).json()
        assert deletion["status"] == "deactivated" and deletion["counts"]["deleted"] == 10
        url = f"{base}/deletions/{deletion['id']}"
        wait_for(lambda: status(url) == "completed", 180, "the deletion to complete")
        done = httpx.get(url, headers=headers).json()
        assert done["approximated_at"] and done["approximated_at"] < done["retraining_at"], done
    finally:
        output = stop(process)
    assert "Traceback" not in output, output[-3000:]


def _read_json(path: Path) -> dict[str, str]:
    return json.loads(path.read_text()) if path.exists() else {}
