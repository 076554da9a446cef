"""Structured logs: JSON records carry the request id (the client's, when well-formed) and the
job id of the task that wrote them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.observability import logs
from service.observability.requests import RequestContext
from workers.celery_app import _enter_job, _leave_job


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


def records(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_record_is_one_json_object_with_its_context(stream: io.StringIO) -> None:
    with logs.job_context("job-7"):
        logging.getLogger("t").info("stage %d done", 2, extra={"stages": 3})
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("t").exception("failed")
    first, second = records(stream)
    assert first["message"] == "stage 2 done" and first["level"] == "info"
    assert first["job_id"] == "job-7" and first["stages"] == 3 and first["logger"] == "t"
    assert "job_id" not in second and "ValueError: boom" in str(second["exception"])


def test_requests_get_an_id_echoed_and_logged(stream: io.StringIO) -> None:
    app = FastAPI()
    app.add_middleware(RequestContext)

    @app.get("/items/{item_id}")
    def read(item_id: int) -> dict[str, int]:
        logging.getLogger("route").info("reading")
        return {"id": item_id}

    client = TestClient(app)
    given = client.get("/items/4?text=secret", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = client.get("/items/5", headers={"X-Request-ID": "bad id\n"})
    assert len(made.headers["x-request-id"]) == 32  # replaced: not a safe id
    ours = [r for r in records(stream) if r["logger"] in ("route", "service.access")]
    route_line, access, _, access_2 = ours
    assert route_line["request_id"] == "abc-123" and access["request_id"] == "abc-123"
    assert access["route"] == "/items/{item_id}" and access["status"] == 200
    assert "secret" not in json.dumps(ours), "no query string is logged"
    assert access_2["request_id"] == made.headers["x-request-id"]


def test_a_task_logs_with_its_job_id(stream: io.StringIO) -> None:
    _enter_job(task_id="t1", args=("job-42",), kwargs={})
    logging.getLogger("task").info("working")
    _leave_job(task_id="t1")
    logging.getLogger("task").info("idle")
    working, idle = (r for r in records(stream) if r["logger"] == "task")
    assert working["job_id"] == "job-42" and "job_id" not in idle
