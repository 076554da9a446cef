"""Freshness across API processes: a deletion through one `unlearn serve`, the next prediction
through another (one database), and that prediction never uses a layer the deletion turned off.

The layers a prediction used come from its answer (``shards[].layers``, the serving process's
own layer map); the layers a deletion invalidated come from its certificate and from the
lineage itself. No pub/sub runs here: the second process learns of the deletion only by
checking the model's generation, as every prediction does. Between deletions the retrains run
(in this process), so every deletion turns active layers off.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.app import create_app
from service.db.engine import make_engine
from service.db.models import Layer, LayerState
from service.settings import Settings
from tests.conftest import FreshDatabase
from tests.integration.api import (
    TINY_BASE,
    Api,
    InProcessWorker,
    issue_keys,
    samples,
    save_tiny_backbone,
    trained_model,
    used_layers,
)
from tests.integration.services import api_processes

# They start `unlearn` processes: one at a time beside the in-process tests (`make test`).
pytestmark = pytest.mark.xdist_group("processes")

DELETIONS = 6


@pytest.fixture
def stack(fresh_db: FreshDatabase, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A trained tiny model, then two API processes on its database and artifacts."""
    tiny = save_tiny_backbone(tmp_path / "tiny")
    settings = Settings(
        data_dir=tmp_path,
        database_url=fresh_db.url(),
        backbone_path=tiny,
        default_base_model=TINY_BASE,
    )
    token = issue_keys(settings)["a"]
    worker = InProcessWorker(settings)
    with TestClient(create_app(settings)) as setup:
        model_id = trained_model(Api(setup, token), worker, samples(24))
    try:
        with api_processes(tmp_path, settings.database_url, tiny, TINY_BASE, token) as clients:
            yield {
                "clients": clients,
                "model_id": model_id,
                "database_url": settings.database_url,
                "worker": worker,
            }
    finally:
        worker.close()


def test_a_deletion_through_one_process_is_never_served_by_the_other(
    stack: dict[str, Any],
) -> None:
    through, other = stack["clients"]
    model_id = stack["model_id"]
    predict = f"/models/{model_id}/predict"
    engine = make_engine(stack["database_url"])
    try:
        for client in (through, other):  # both processes hold the model's layer map now
            assert client.post(predict, json={"texts": ["warm up"]}).status_code == 200
        for i in range(DELETIONS):
            accepted = through.post(
                "/deletions", json={"model_id": model_id, "sample_ids": [f"s{i * 4:03d}"]}
            )
            assert accepted.status_code == 202, accepted.text
            answer = other.post(predict, json={"texts": ["good thing"]})
            assert answer.status_code == 200, answer.text
            used = used_layers(answer.json())
            certificate = through.get(f"/deletions/{accepted.json()['id']}/certificate").json()
            invalidated = {layer["layer_id"] for layer in certificate["layers_invalidated"]}
            assert invalidated, "the deletion turned no layer off: nothing was tested"
            assert set(accepted.json()["layers_invalidated"]) == invalidated  # as its 202 said
            assert not used & invalidated, f"deletion {i}: the other process used {used}"
            assert used <= _active_layers(engine), f"deletion {i}: {used} not all active"
            stack["worker"].drain()  # the retrains activate new layers before the next one
    finally:
        engine.dispose()


def _active_layers(engine: sa.Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.scalars(sa.select(Layer.id).where(Layer.state == LayerState.active)))
