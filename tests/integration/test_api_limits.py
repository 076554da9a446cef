"""Oversized input is refused with a clear 4xx problem, at the documented limits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.settings import Settings
from tests.integration.api import TINY_MODEL, auth, problem

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
