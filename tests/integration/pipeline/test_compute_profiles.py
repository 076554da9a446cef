"""Compute profiles over HTTP on SQLite and PostgreSQL: a model records the profile that trains
it, its jobs go only to that profile's queues, and a job no live worker can take says so."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from service.db.models import OutboxMessage
from service.db.repositories import WorkerRepository
from tests.integration.api import TINY_MODEL, Api, InProcessWorker, problem, samples
from unlearning.device import local_profile

pytestmark = pytest.mark.integration

GPU = "cuda-sm90-torch2.11.0"


def _queues(worker: InProcessWorker) -> set[str]:
    with worker.factory() as session:
        return set(session.scalars(sa.select(OutboxMessage.queue)))


def _announce(worker: InProcessWorker, name: str, profile: str, heartbeat_s: float) -> None:
    with worker.factory() as session, session.begin():
        WorkerRepository.from_session(session).announce(name, profile, ["q"], heartbeat_s)


def test_models_record_a_profile_and_refuse_a_malformed_one(api: Api) -> None:
    default = api.ok(api.post("/models", TINY_MODEL), 201)
    assert default["compute_profile"] == local_profile("cpu")  # this API's own: no GPU here
    gpu = api.ok(api.post("/models", {**TINY_MODEL, "compute_profile": GPU}), 201)
    assert api.ok(api.get(f"/models/{gpu['id']}"))["compute_profile"] == GPU
    half = api.ok(api.post("/models", {**TINY_MODEL, "compute_profile": f"{GPU}-bf16"}), 201)
    assert half["compute_profile"] == f"{GPU}-bf16"  # a base in bfloat16 is another profile
    for bad in ("gpu", "cuda-torch2.11", "cpu-torch2.13.0; DROP", f"{GPU}-fp8"):
        body = problem(api.post("/models", {**TINY_MODEL, "compute_profile": bad}), 422)
        assert "compute_profile" in str(body)


def test_jobs_go_to_their_profile_and_wait_visibly_for_its_workers(
    api: Api, worker: InProcessWorker
) -> None:
    model = api.ok(api.post("/models", {**TINY_MODEL, "compute_profile": GPU}), 201)
    api.ok(api.post(f"/models/{model['id']}/samples", {"samples": samples(16)}))
    accepted = api.ok(api.post(f"/models/{model['id']}/train"), 202)
    assert _queues(worker) == {f"training@{GPU}"}  # never the CPU workers' queue

    status = api.ok(api.get(f"/models/{model['id']}/status"))["compute"]
    assert (status["profile"], status["live_workers"]) == (GPU, 0)
    assert GPU in status["waiting"] and "no live worker" in status["waiting"]
    job = api.ok(api.get(accepted["job_url"]))
    assert job["compute_profile"] == GPU and GPU in job["waiting_for_worker"]

    _announce(worker, "celery@cpu-box", local_profile("cpu"), 60)  # another profile: no help
    assert api.ok(api.get(f"/models/{model['id']}/status"))["compute"]["waiting"] is not None
    _announce(worker, "celery@gpu-box", GPU, 60)
    status = api.ok(api.get(f"/models/{model['id']}/status"))["compute"]
    assert (status["live_workers"], status["waiting"]) == (1, None)
    assert api.ok(api.get(accepted["job_url"]))["waiting_for_worker"] is None

    _announce(worker, "celery@gpu-box", GPU, 0.05)  # then silent for three heartbeats: gone
    time.sleep(0.3)
    status = api.ok(api.get(f"/models/{model['id']}/status"))["compute"]
    assert (status["live_workers"], GPU in status["waiting"]) == (0, True)

    worker.drain()  # a worker of the profile runs the jobs; nothing waits any more
    status = api.ok(api.get(f"/models/{model['id']}/status"))
    assert status["status"] == "ready" and status["compute"]["waiting"] is None


def test_a_deletions_pass_goes_to_the_deletions_queue_of_the_profile(
    api: Api, worker: InProcessWorker
) -> None:
    settings = {"compute_profile": GPU, "unlearning_policy": "approximate_then_exact"}
    model = api.ok(api.post("/models", {**TINY_MODEL, **settings}), 201)
    api.ok(api.post(f"/models/{model['id']}/samples", {"samples": samples(16)}))
    api.ok(api.post(f"/models/{model['id']}/train"), 202)
    worker.drain()
    api.ok(api.delete(model["id"], sample_ids=["s001"]), 202)
    assert _queues(worker) == {f"training@{GPU}", f"deletions@{GPU}"}
