"""The health endpoint of processes without an API answers from its own thread."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from service.observability.health_server import HealthServer


def _get(port: int, path: str = "/healthz") -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_it_answers_what_the_check_says() -> None:
    state = {"healthy": True}

    def check() -> tuple[bool, dict[str, Any]]:
        return state["healthy"], {"jobs": ["j1"]}

    server = HealthServer("127.0.0.1", 0, check)
    server.start()
    try:
        assert _get(server.port) == (200, {"status": "ok", "jobs": ["j1"]})
        state["healthy"] = False
        assert _get(server.port)[0] == 503
        assert _get(server.port, "/other")[0] == 404
    finally:
        server.stop()


def test_a_broken_check_is_unhealthy_not_a_crash() -> None:
    def check() -> tuple[bool, dict[str, Any]]:
        raise RuntimeError("database gone")

    server = HealthServer("127.0.0.1", 0, check)
    server.start()
    try:
        assert _get(server.port) == (503, {"status": "failing", "error": "RuntimeError"})
    finally:
        server.stop()
