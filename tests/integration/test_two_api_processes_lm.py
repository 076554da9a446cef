"""Freshness of a causal LM across API processes: a subject's deletion through one `unlearn
serve`, the next generation (JSON and streamed) and score through another (one database), and
none of them uses a layer the deletion turned off. As in test_two_api_processes.py, the second
process learns of the deletion only by checking the model's generation, per token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.app import create_app
from service.db.engine import make_engine
from service.db.models import Layer, LayerState
from service.engine import EngineCatalogue
from service.settings import Settings
from tests.conftest import FreshDatabase
from tests.integration.api import TINY_BASE, Api, InProcessWorker, issue_keys, save_tiny_backbone
from tests.integration.pipeline.llm import chat_rows, register_tiny_llama, trained_llm
from tests.integration.services import api_processes
from unlearning.families.testing import save_tiny_model

# They start `unlearn` processes: one at a time beside the in-process tests (`make test`).
pytestmark = [
    pytest.mark.xdist_group("processes"),
    pytest.mark.parametrize("fresh_db", ["sqlite"], indirect=True),
]
SUBJECTS = ("user1", "user2")


@pytest.fixture
def stack(fresh_db: FreshDatabase, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A trained tiny Llama causal LM, then two API processes on its database and artifacts."""
    tiny = save_tiny_backbone(tmp_path / "tiny")
    settings = Settings(
        data_dir=tmp_path,
        database_url=fresh_db.url(),
        backbone_path=tiny,
        default_base_model=TINY_BASE,
    )
    token = issue_keys(settings)["a"]
    worker = InProcessWorker(settings, engines=EngineCatalogue(settings))
    with TestClient(create_app(settings)) as setup:
        register_tiny_llama(
            worker.factory, settings, save_tiny_model("llama", tmp_path / "llama", n_layers=2)
        )
        model_id = trained_llm(Api(setup, token), worker, chat_rows(16))
    try:
        with api_processes(tmp_path, settings.database_url, tiny, TINY_BASE, token) as clients:
            yield {
                "clients": clients,
                "model_id": model_id,
                "worker": worker,
                "database_url": settings.database_url,
            }
    finally:
        worker.close()


def _streamed(client: httpx.Client, path: str, body: dict[str, Any]) -> list[tuple[str, Any]]:
    """A streamed generation's events as (name, data), read as they arrive."""
    events: list[tuple[str, Any]] = []
    name = ""
    with client.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def _active_layers(engine: sa.Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.scalars(sa.select(Layer.id).where(Layer.state == LayerState.active)))


def test_a_deletion_through_one_process_is_never_generated_from_by_the_other(
    stack: dict[str, Any],
) -> None:
    through, other = stack["clients"]
    model_id = stack["model_id"]
    generate, score = f"/models/{model_id}/generate", f"/models/{model_id}/score"
    ask = {"prompt": "what is item 3", "max_new_tokens": 4}
    engine = make_engine(stack["database_url"])
    try:
        for client in (through, other):  # both processes hold the model's layer map now
            assert client.post(generate, json=ask).status_code == 200
        for subject in SUBJECTS:
            accepted = through.post(
                "/deletions", json={"model_id": model_id, "subject_id": subject}
            )
            assert accepted.status_code == 202, accepted.text
            certificate = through.get(f"/deletions/{accepted.json()['id']}/certificate").json()
            invalidated = {layer["layer_id"] for layer in certificate["layers_invalidated"]}
            assert invalidated, "the deletion turned no layer off: nothing was tested"
            answer = other.post(generate, json=ask)
            assert answer.status_code == 200, answer.text
            used = set(answer.json()["layers"])
            assert not used & invalidated, f"{subject}: the other process used {used}"
            assert used <= _active_layers(engine)
            events = _streamed(other, generate, ask)
            assert events[-1][0] == "done" and events[0][1]["shards"]
            assert not set(events[-1][1]["layers"]) & invalidated
            scored = other.post(score, json={"prompt": "what is item 3", "completions": ["a b"]})
            assert scored.status_code == 200, scored.text
            assert not set(scored.json()["layers"]) & invalidated
            stack["worker"].drain()  # the retrains activate new layers before the next one
    finally:
        engine.dispose()
