"""No deletion is lost once it answered 202: faults injected into the real pipeline.

A real ``unlearn worker`` process on PostgreSQL and Redis, the API in this process with a short
job lease (``UNLEARN_JOB_LEASE_S``) so that its housekeeping re-sends lost work quickly. Each
test breaks one thing between the 202 and the retrain: the worker is SIGKILLed mid-retrain,
Redis restarts (losing the queued message: it keeps nothing on disk), PostgreSQL restarts, or
the API process stops before its relay sent the job. Every deletion still completes, and the
served layers are bitwise those of training without the deleted samples. The services are
running again when each test ends.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.app import create_app
from service.db.models import Job, Layer, LayerState, OutboxMessage
from tests.integration.api import (
    TINY_MODEL,
    auth,
    issue_keys,
    samples,
    trained_without,
)
from tests.integration.services import (
    restart_postgres,
    restart_redis,
    wait_for,
)
from tests.integration.stack import WorkerStack
from tests.tiny_models import tiny_backbone
from unlearning.artifacts import LocalArtifactStore
from unlearning.s3t import S3TEngine

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("processes")]
TIMEOUT_S = 180
ROWS = samples(24)
GONE = {"s003", "s010"}
FINAL = ("succeeded", "failed", "cancelled", "completed")
SLOW = {**TINY_MODEL, "epochs_per_stage": 60}  # a retrain long enough to be killed mid-way


class Stack(WorkerStack):
    """The API in this process (a 4 s lease), workers as child processes, and the calls."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path, job_lease_s=4.0)
        self.headers = auth(issue_keys(self.settings)["a"])

    def ok(self, response: Any, status: int = 200) -> Any:
        assert response.status_code == status, response.text
        return response.json()

    def trained(self, client: TestClient, model: dict[str, Any]) -> dict[str, Any]:
        body = self.ok(client.post("/models", json=model, headers=self.headers), 201)
        url = f"/models/{body['id']}"
        self.ok(client.post(f"{url}/samples", json={"samples": ROWS}, headers=self.headers))
        job = self.ok(client.post(f"{url}/train", headers=self.headers), 202)
        done = wait_for(functools.partial(self.final, client, job["job_url"]), TIMEOUT_S, "train")
        assert done["status"] == "succeeded", done
        trained: dict[str, Any] = self.ok(client.get(url, headers=self.headers))
        return trained

    def delete(self, client: TestClient, model: dict[str, Any]) -> dict[str, Any]:
        body = {"model_id": model["id"], "sample_ids": sorted(GONE)}
        deletion: dict[str, Any] = self.ok(
            client.post("/deletions", json=body, headers=self.headers), 202
        )
        assert deletion["status"] == "deactivated"
        return deletion

    def final(self, client: TestClient, url: str) -> Any:
        """The job's or deletion's body once it reached a final status, else None."""
        body = self.ok(client.get(url, headers=self.headers))
        return body if body["status"] in FINAL else None

    def completed(
        self, client: TestClient, deletion: dict[str, Any], model: dict[str, Any]
    ) -> None:
        """The deletion completes, and what is served is training without the samples."""
        url = f"/deletions/{deletion['id']}"
        done = wait_for(functools.partial(self.final, client, url), TIMEOUT_S, "the deletion")
        assert done["status"] == "completed", done
        # The shards' other orders follow the served ones (restore delay 0 in the stack).
        status_url = f"/models/{model['id']}/status"
        wait_for(
            lambda: self.ok(client.get(status_url, headers=self.headers))["pending_retrains"] == 0,
            TIMEOUT_S,
            "the parked orders",
        )
        reference = S3TEngine(tiny_backbone(4), LocalArtifactStore(self.settings.data_dir / "r"))
        with self.db.connect() as conn:
            active = set(
                conn.scalars(sa.select(Layer.artifact_ref).where(Layer.state == LayerState.active))
            )
        assert active == trained_without(reference, model, ROWS, GONE)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path)
    try:
        yield stack
    finally:
        output = stack.close()
        assert "Traceback" not in output, output[-4000:]


def _app(stack: Stack, **changes: Any) -> TestClient:
    settings = stack.settings.model_copy(update=changes)
    return TestClient(create_app(settings), raise_server_exceptions=False)


def test_a_worker_killed_mid_retrain(stack: Stack) -> None:
    first = stack.worker()
    with _app(stack) as client:
        model = stack.trained(client, SLOW)
        deletion = stack.delete(client, model)

        def retraining() -> Any:
            with stack.db.connect() as conn:
                return conn.scalar(
                    sa.select(Job.id).where(Job.kind == "retrain", Job.status == "running")
                )

        job_id = wait_for(retraining, TIMEOUT_S, "a retrain to start")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        with stack.db.connect() as conn:
            assert conn.scalar(sa.select(Job.status).where(Job.id == job_id)) == "running"
        stack.worker()  # the lease expires, the API re-sends the job, this worker runs it
        stack.completed(client, deletion, model)
        with stack.db.connect() as conn:
            assert (conn.scalar(sa.select(Job.attempts).where(Job.id == job_id)) or 0) >= 2


@pytest.mark.serial
def test_redis_restarts_with_the_job_queued(stack: Stack) -> None:
    worker = stack.worker()
    with _app(stack) as client:
        model = stack.trained(client, TINY_MODEL)
        stack.stop(worker)
        deletion = stack.delete(client, model)

        def sent() -> Any:
            with stack.db.connect() as conn:
                return not conn.scalar(
                    sa.select(sa.func.count())
                    .select_from(OutboxMessage)
                    .where(OutboxMessage.sent_at.is_(None))
                )

        wait_for(sent, 30, "the relay to send the jobs")
        restart_redis()  # the queued messages are gone with it
        assert not redis.Redis.from_url(stack.broker).llen("training")
        stack.worker()
        stack.completed(client, deletion, model)


@pytest.mark.serial
def test_postgres_restarts_between_the_request_and_the_job(stack: Stack) -> None:
    worker = stack.worker()
    with _app(stack) as client:
        model = stack.trained(client, TINY_MODEL)
        stack.stop(worker)
        deletion = stack.delete(client, model)
        restart_postgres()
        stack.worker()
        stack.completed(client, deletion, model)


def test_the_api_stops_before_its_relay_sent_the_job(stack: Stack) -> None:
    stack.worker()
    with _app(stack) as client:
        model = stack.trained(client, TINY_MODEL)
    with _app(stack, relay_interval_s=3600.0) as client:  # it relays once, at start
        relay = client.app.state.relay  # type: ignore[attr-defined]
        relay.wake = lambda **_: None
        # that first round is over before the deletion commits (a slow start would send it)
        wait_for(lambda: relay.rounds >= 1, 60, "the relay's first round")
        deletion = stack.delete(client, model)
    with stack.db.connect() as conn:  # committed, never sent
        assert conn.scalar(
            sa.select(sa.func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.sent_at.is_(None))
        )
    with _app(stack) as client:  # the next API process sends it
        stack.completed(client, deletion, model)
