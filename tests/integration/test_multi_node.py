"""Several machines: two API processes, two workers and two housekeepers, each with local
folders of its own, sharing only PostgreSQL, Redis and an S3 server (moto's, a process on
loopback).

Deletions go through both APIs, one worker is SIGKILLed mid-retrain, and then:

- every deletion completes (the housekeeper, not an API process, re-sends the killed job once
  its lease ends: the APIs run with ``UNLEARN_API_HOUSEKEEPING=false``), and the active layers
  are bitwise those of a fresh training without the deleted samples, their artifacts in S3;
- no prediction through either API, made at any time after a deletion's 202, used a layer that
  deletion turned off;
- the workers' health checks answered while they trained, and one housekeeper led;
- the write rate limit holds across both APIs: one budget for a key, not one per process.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from service.db.engine import make_engine
from service.db.models import Job, Layer, LayerState
from service.settings import Settings
from tests.conftest import FreshDatabase
from tests.integration.api import (
    TINY_BASE,
    TINY_MODEL,
    issue_keys,
    samples,
    save_tiny_backbone,
    trained_without,
    used_layers,
)
from tests.integration.s3 import S3Server
from tests.integration.services import (
    answers,
    free_port,
    require_redis,
    stop,
    unlearn,
    wait_for,
)
from tests.tiny_models import tiny_backbone
from unlearning.artifacts import LocalArtifactStore
from unlearning.s3t import S3TEngine
from unlearning.sharding import place

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("processes"),
    pytest.mark.timeout(600),  # about 90 s alone; more beside the rest of the suite
]
TIMEOUT_S = 240
ROWS = samples(24)
#: The deletions, in order; even ones through the first API, odd ones through the second.
#: Single-sample deletions, one after another before any retrain lands.
N_DELETIONS = 4


def deletions_for(model: dict[str, Any]) -> list[list[str]]:
    """Four samples of slice 0 (placement hashes the model's random id): each shard keeps the
    order that starts with slice 1 and serves throughout. Four deletions spread over every
    (shard, slice) would leave no shard servable until a retrain lands (about one model in ten),
    a 409 that ``min_live_shards`` owes and this test does not test."""
    ids = [
        row["external_id"]
        for row in ROWS
        if place(
            model["id"],
            row["external_id"],
            None,
            model["n_shards"],
            model["n_slices"],
            model["placement"],
        ).slice
        == 0
    ]
    assert len(ids) >= N_DELETIONS, ids
    return [[sample] for sample in ids[:N_DELETIONS]]


#: A retrain long enough to be killed mid-way.
MODEL = {**TINY_MODEL, "epochs_per_stage": 40}
RATE_PER_MINUTE = 40
FINAL = ("completed", "failed")


class Cluster:
    """The processes of the test, each in a folder of its own (its "machine")."""

    def __init__(self, tmp_path: Path, s3: S3Server) -> None:
        self.tmp = tmp_path
        self.broker = require_redis()
        redis.Redis.from_url(self.broker).flushdb()
        self.database = FreshDatabase("postgresql", tmp_path)
        self.database_url = self.database.url()
        self.s3 = s3
        self.bucket = s3.create_bucket()
        self.backbone = save_tiny_backbone(tmp_path / "tiny")
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self.health_ports: dict[str, int] = {}
        self.outputs: dict[str, str] = {}
        self.db = make_engine(self.database_url)

    def env(self, node: str) -> dict[str, str]:
        folder = self.tmp / node
        backbone = folder / "backbone"
        if not backbone.exists():  # each machine has its own copy of the model files
            shutil.copytree(self.backbone, backbone)
        return {
            "UNLEARN_DATA_DIR": str(folder),
            "UNLEARN_DATABASE_URL": self.database_url,
            "UNLEARN_BROKER_URL": self.broker,
            "UNLEARN_BACKBONE_PATH": str(backbone),
            "UNLEARN_DEFAULT_BASE_MODEL": TINY_BASE,
            "UNLEARN_LOG_FORMAT": "json",
            "UNLEARN_RELAY_INTERVAL_S": "0.2",
            "UNLEARN_JOB_LEASE_S": "4",
            "UNLEARN_RETRAIN_WINDOW_S": "0",
            "UNLEARN_RETRAIN_RESTORE_AFTER_S": "0",
            "UNLEARN_API_HOUSEKEEPING": "false",
            "UNLEARN_WRITE_RATE_PER_MINUTE": str(RATE_PER_MINUTE),
            **self.s3.env(self.bucket),
        }

    def start(self, node: str, args: list[str], *, health: bool = False) -> None:
        env = self.env(node)
        if health:
            self.health_ports[node] = free_port()
            env["UNLEARN_HEALTH_PORT"] = str(self.health_ports[node])
        self.processes[node] = unlearn(args, env)

    def api(self, node: str, token: str) -> httpx.Client:
        port = free_port()
        self.start(node, ["serve", "--port", str(port)])
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        wait_for(
            functools.partial(answers, f"http://127.0.0.1:{port}/healthz"), 90, f"{node} to answer"
        )
        return client

    def health(self, node: str) -> dict[str, Any] | None:
        """The node's /healthz answer (None while it does not answer 200)."""
        try:
            answer = httpx.get(f"http://127.0.0.1:{self.health_ports[node]}/healthz", timeout=5)
        except httpx.TransportError:
            return None
        body: dict[str, Any] = answer.json()
        return body if answer.status_code == 200 else None

    def kill(self, node: str) -> None:
        process = self.processes[node]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        self.outputs[node] = stop(self.processes.pop(node))

    def close(self) -> None:
        for node, process in self.processes.items():
            self.outputs[node] = stop(process)
        self.db.dispose()
        self.database.close()

    def active(self) -> dict[int, str]:
        with self.db.connect() as conn:
            rows = conn.execute(
                sa.select(Layer.id, Layer.artifact_ref).where(Layer.state == LayerState.active)
            )
            return {layer_id: ref or "" for layer_id, ref in rows}

    def running_on(self, workers: list[str]) -> tuple[str, str] | None:
        """(worker, job id) of a worker whose health answer lists a running job."""
        for worker in workers:
            answer = self.health(worker)
            if answer and answer["jobs"]:
                return worker, answer["jobs"][0]
        return None


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with S3Server() as s3:
        cluster = Cluster(tmp_path, s3)
        try:
            yield cluster
        finally:
            cluster.close()
    output = "".join(cluster.outputs.values())
    assert "Traceback" not in output, output[-6000:]


def test_two_apis_two_workers_sharing_only_postgres_redis_and_s3(cluster: Cluster) -> None:
    settings = Settings(database_url=cluster.database_url)
    tokens = issue_keys(settings)
    workers = ["worker-1", "worker-2"]
    for n, node in enumerate(workers, 1):
        cluster.start(node, ["worker", "--name", f"w{n}@%h"], health=True)
    for node in ("housekeeper-1", "housekeeper-2"):
        cluster.start(node, ["housekeeper"], health=True)
    apis = [cluster.api("api-1", tokens["a"]), cluster.api("api-2", tokens["a"])]

    # A model trained through the first API on the workers.
    first, second = apis
    model = _ok(first.post("/models", json=MODEL), 201)
    url = f"/models/{model['id']}"
    _ok(first.post(f"{url}/samples", json={"samples": ROWS}))
    job = _ok(first.post(f"{url}/train"), 202)
    done = wait_for(
        lambda: _final(first, job["job_url"], ("succeeded", "failed")), TIMEOUT_S, "training"
    )
    assert done["status"] == "succeeded", done
    model = _ok(first.get(url))
    predict = f"{url}/predict"
    for api in apis:  # both hold the model's layer map now, loaded from S3
        _ok(api.post(predict, json={"texts": ["warm up"]}))

    invalidated: set[int] = set()  # every layer a deletion turned off, once its 202 came back
    predictions = 0

    def served_fresh() -> None:
        """A prediction through each API uses none of the layers turned off so far."""
        nonlocal predictions
        for n, api in enumerate(apis):
            used = used_layers(_ok(api.post(predict, json={"texts": ["good thing"]})))
            assert used, "a prediction named no layer: nothing was checked"
            assert not used & invalidated, f"api-{n + 1} served {used & invalidated}"
            predictions += 1

    deletions = []
    chosen = deletions_for(model)
    for i, sample_ids in enumerate(chosen):
        through = apis[i % 2]
        accepted = _ok(
            through.post("/deletions", json={"model_id": model["id"], "sample_ids": sample_ids}),
            202,
        )
        # Later ones may find their layers off already (their retrain has not run yet).
        assert accepted["layers_invalidated"] or i, "the deletion turned no layer off"
        invalidated |= set(accepted["layers_invalidated"])
        deletions.append(accepted)
        served_fresh()
    # Mid-retrain (its health check answers while it trains), a worker is killed. No deletion
    # follows that could cancel its job: only the housekeeper's re-send finishes it.
    killed = wait_for(lambda: cluster.running_on(workers), TIMEOUT_S, "a retrain")
    cluster.kill(killed[0])
    served_fresh()

    # The other worker finishes everything once the housekeeper re-sends the killed job.
    def all_done() -> bool:
        served_fresh()
        states = [_final(apis[0], f"/deletions/{d['id']}", FINAL) for d in deletions]
        return all(states)

    wait_for(all_done, TIMEOUT_S, "every deletion to complete")
    for deletion in deletions:
        assert _ok(second.get(f"/deletions/{deletion['id']}"))["status"] == "completed"
    wait_for(
        lambda: _ok(first.get(f"{url}/status"))["pending_retrains"] == 0,
        TIMEOUT_S,
        "the parked orders",
    )
    served_fresh()
    assert predictions >= 2 * (len(chosen) + 2)

    # Exact: the active layers are those of training without the deleted samples.
    gone = {sample for ids in chosen for sample in ids}
    reference = S3TEngine(tiny_backbone(4), LocalArtifactStore(cluster.tmp / "reference"))
    active = cluster.active()
    assert set(active.values()) == trained_without(reference, model, ROWS, gone)
    assert not set(active) & invalidated
    # ... stored in S3, and only there: no machine has an artifact folder of its own.
    stored = {key.rsplit("/", 1)[-1] for key in cluster.s3.keys(cluster.bucket)}
    assert {ref.removeprefix("sha256:") for ref in active.values()} <= stored
    for node in cluster.processes:
        assert not any((cluster.tmp / node / "artifacts").glob("*/*")), node

    # The killed worker's job was run again by the other; one housekeeper led.
    with cluster.db.connect() as conn:
        attempts = conn.scalar(sa.select(Job.attempts).where(Job.id == uuid.UUID(killed[1])))
    assert (attempts or 0) >= 2
    leaders = [cluster.health(node) for node in ("housekeeper-1", "housekeeper-2")]
    assert all(leaders), leaders
    assert sorted(bool(answer and answer["rounds_led"]) for answer in leaders) == [False, True]

    # One write budget for a key across both APIs (per process it would be twice as large).
    other = {"Authorization": f"Bearer {tokens['b']}"}
    accepted_writes = 0
    for i in range(2 * RATE_PER_MINUTE):
        body = {"model_id": str(uuid.uuid4()), "sample_ids": ["x"]}
        answer = apis[i % 2].post("/deletions", json=body, headers=other)
        assert answer.status_code in (404, 429), answer.text
        accepted_writes += answer.status_code == 404
    assert RATE_PER_MINUTE <= accepted_writes < RATE_PER_MINUTE + 10, accepted_writes


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _final(client: httpx.Client, url: str, final: tuple[str, ...]) -> Any:
    body = _ok(client.get(url))
    return body if body["status"] in final else None
