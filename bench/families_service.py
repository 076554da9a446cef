"""The service part of ``bench/families.py``: every family's base model behind one deployment.

The app runs in this process (FastAPI's test client) on an embedded SQLite database with the
relay idle; jobs run here too, on an engine catalogue (one engine per base model, as a worker
holds them). Per family, the family's folder is registered as a base model (as
``unlearn base-models register`` does; the real MiniLM is the deployment's default base model),
a model is created on it through ``POST /models``, its samples registered and trained through
the API, and then, one at a time on the otherwise quiet service:

- ``POST /deletions`` of one sample: the 202's latency;
- deletion -> clean prediction: from sending the deletion to the first ``POST .../predict``
  answer that names none of the layers the 202 invalidated (``bench/freshness.py``);
- then the queued retrains run (untimed), so every deletion meets a whole model.

A prediction alone is timed too (the floor of deletion -> clean prediction: a 202 and one
answer). Image families go through the API once it takes images; until then their entry says
``via`` and what was measured instead.
"""

from __future__ import annotations

import random
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # also when a test loads this file by its path

from freshness import invalidated_layers, layers_of  # noqa: E402
from timing import summary_ms  # noqa: E402

from service.app import create_app  # noqa: E402
from service.base_models.service import register  # noqa: E402
from service.db import migrate  # noqa: E402
from service.db.engine import make_engine, make_session_factory, unit_of_work  # noqa: E402
from service.engine import EngineCatalogue  # noqa: E402
from service.settings import Settings  # noqa: E402
from tests.integration.api import Api, InProcessWorker, issue_keys  # noqa: E402

#: How many clean-prediction probes a deletion gets before it counts as never clean.
ATTEMPTS = 50


@dataclass
class Deployment:
    settings: Settings
    api: Api
    worker: InProcessWorker


@contextmanager
def deployment(tmp: Path, device: str) -> Iterator[Deployment]:
    """The app and an in-process worker on a fresh SQLite database under ``tmp``."""
    tmp.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        data_dir=tmp,
        database_url=f"sqlite:///{tmp / 'lineage.sqlite3'}",
        relay_interval_s=3600,
        device=device,
    )
    migrate.upgrade(settings.database_url)
    keys = issue_keys(settings)
    worker = InProcessWorker(settings, engines=EngineCatalogue(settings))
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            yield Deployment(settings, Api(client, keys["a"]), worker)
    finally:
        worker.close()


def register_base(settings: Settings, name: str, folder: Path) -> str:
    """Register ``folder`` as base model ``name`` (what the operators' CLI does); its digest."""
    engine = make_engine(settings.database_url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            return register(session, settings, name, str(folder)).sha256
    finally:
        engine.dispose()


def measure(
    stack: Deployment,
    family: str,
    base_model: str,
    labels: list[str],
    rows: list[dict[str, Any]],
    probe: dict[str, list[str]],
    settings: dict[str, Any],
    *,
    deletions: int,
    seed: int,
) -> dict[str, Any]:
    """Create, train and delete from a model of ``base_model`` through the API (see the
    module's docstring). ``rows`` are the API's samples; ``probe`` the body of every prediction
    (``texts`` or base64 ``images``)."""
    api, worker = stack.api, stack.worker
    body = {"name": f"bench-{family}", "labels": labels, "base_model": base_model, **settings}
    model = api.ok(api.post("/models", body), 201)
    model_id = model["id"]
    api.ok(api.post(f"/models/{model_id}/samples", {"samples": rows}))
    job_url = api.ok(api.post(f"/models/{model_id}/train"), 202)["job_url"]
    _, train_s = _timed(worker.drain)
    job = api.ok(api.get(job_url))
    if job["status"] != "succeeded":
        raise RuntimeError(f"training through the service ended {job['status']}: {job}")
    predict_url = f"/models/{model_id}/predict"
    first = api.post(predict_url, probe)  # loads the base model for serving
    api.ok(first)
    alone: list[float] = []
    for _ in range(deletions):
        _, took = _timed(lambda: api.ok(api.post(predict_url, probe)))
        alone.append(took)

    victims = random.Random(seed).sample([r["external_id"] for r in rows], deletions)
    accepted: list[float] = []
    clean: list[float] = []
    dirty = never = 0
    retrain_s = 0.0
    for victim in victims:
        sent = time.perf_counter()
        response = api.delete(model_id, sample_ids=[victim])
        accepted.append(time.perf_counter() - sent)
        deletion = api.ok(response, 202)
        invalidated = invalidated_layers(deletion)
        for _ in range(ATTEMPTS):
            answer = api.post(predict_url, probe)
            if answer.status_code == 200 and not layers_of(answer.json()) & invalidated:
                clean.append(time.perf_counter() - sent)
                break
            dirty += 1
        else:
            never += 1
        _, took = _timed(worker.drain)
        retrain_s += took
    return {
        "via": "api",
        "base_model": base_model,
        "model_id": str(uuid.UUID(model_id)),
        "samples": len(rows),
        "training_seconds": round(train_s, 2),
        "deletion_202": {"deletions": deletions, **summary_ms(accepted)},
        # Only the deletions that did come clean (deletions_never_clean says how many did not).
        "deletion_to_clean_prediction": {
            "deletions": len(clean),
            **(summary_ms(clean) if clean else {"p50_ms": None, "p99_ms": None}),
        },
        "prediction_alone": {"predictions": len(alone), **summary_ms(alone)},
        "probes_that_used_an_invalidated_layer": dirty,
        "deletions_never_clean": never,
        "retrain_seconds_per_deletion": round(retrain_s / deletions, 3),
    }


def _timed(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started
