"""Oversized input is refused with a clear 4xx problem, at the documented limits."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.integration.api import TINY_MODEL, auth, problem
from tests.integration.services import free_port, wait_for

pytestmark = pytest.mark.integration
LIMIT = 64 * 1024


def _model(client: TestClient, headers: dict[str, str]) -> str:
    response = client.post("/models", json=TINY_MODEL, headers=headers)
    assert response.status_code == 201, response.text
    model_id: str = response.json()["id"]
    return model_id


class TestBodyLimit:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"max_body_bytes": LIMIT})

    def test_a_body_over_the_limit_is_a_413(self, client: TestClient, keys: dict[str, str]) -> None:
        headers = auth(keys["a"])
        url = f"/models/{_model(client, headers)}/samples"
        rows = [{"external_id": f"s{i}", "label": "pos", "text": "x" * 1000} for i in range(100)]
        body = problem(client.post(url, json={"samples": rows}, headers=headers), 413)
        assert str(LIMIT) in body["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams
            yield b'{"samples": ['
            for i in range(100):
                yield b'{"external_id": "c%d", "label": "pos", "text": "%s"},' % (i, b"y" * 1000)
            yield b"]}"

        chunked = {**headers, "content-type": "application/json"}
        problem(client.post(url, content=chunks(), headers=chunked), 413)
        small = [{"external_id": "ok", "label": "pos", "text": "fine"}]
        assert client.post(url, json={"samples": small}, headers=headers).status_code == 200

    @pytest.mark.parametrize("framing", ["content-length", "chunked"])
    def test_a_client_that_sends_its_whole_body_first_reads_the_413(
        self, settings: Settings, framing: str
    ) -> None:
        """Over a real socket: a body well over the cap, all of it sent before reading (as
        most clients do), is answered with the 413, not a connection reset."""
        body = b"x" * (LIMIT * 12)
        if framing == "chunked":
            head = b"Transfer-Encoding: chunked\r\n"
            payload = b"".join(
                b"%x\r\n%s\r\n" % (len(body[i : i + 8192]), body[i : i + 8192])
                for i in range(0, len(body), 8192)
            )
            payload += b"0\r\n\r\n"
        else:
            head, payload = b"Content-Length: %d\r\n" % len(body), body
        with (
            _serving(create_app(settings)) as port,
            socket.create_connection(("127.0.0.1", port), timeout=30) as sock,
        ):
            sock.sendall(
                b"POST /models HTTP/1.1\r\nHost: test\r\n"
                b"Content-Type: application/json\r\n" + head + b"\r\n" + payload
            )
            answer = http.client.HTTPResponse(sock)
            answer.begin()
            body = answer.read()
        assert answer.status == 413 and b"body-too-large" in body


def test_the_413_comes_once_the_headers_say_the_body_is_too_large(settings: Settings) -> None:
    """A raw client that announces 34 MiB, sends its headers and 1 MiB, then reads: the 413
    comes at once (it used to wait for the rest of the body, which never came)."""
    settings = settings.model_copy(update={"max_body_bytes": LIMIT})
    with (
        _serving(create_app(settings)) as port,
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
    ):
        sock.sendall(
            b"POST /models HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (34 * 1024 * 1024) + b"x" * (1024 * 1024)
        )
        answer = http.client.HTTPResponse(sock)
        answer.begin()  # a timeout here (10 s) is the old behaviour
        assert answer.status == 413 and b"body-too-large" in answer.read()


@contextmanager
def _serving(app: Any) -> Iterator[int]:
    """The app on a real uvicorn server on loopback, in a thread."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 30, "uvicorn to start")
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.mark.parametrize(
    "row",
    [
        {"external_id": "t", "label": "pos", "text": "x" * 100_001},
        {"external_id": "i" * 256, "label": "pos", "text": "x"},
        {"external_id": "l", "label": "p" * 201, "text": "x"},
        {"external_id": "f", "label": 1.0, "features": [0.0] * 10_001},
    ],
    ids=["text", "external_id", "label", "features"],
)
def test_oversized_fields_are_a_422(
    client: TestClient, keys: dict[str, str], row: dict[str, Any]
) -> None:
    headers = auth(keys["a"])
    url = f"/models/{_model(client, headers)}/samples"
    problem(client.post(url, json={"samples": [row]}, headers=headers), 422)
