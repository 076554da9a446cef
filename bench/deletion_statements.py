"""SQL statements one ``POST /deletions`` costs, per case; prints one JSON object.

Runs the app in this process (the tiny backbone, jobs run here) on a fresh PostgreSQL schema and
on SQLite, trains a model of 2 shards x 4 slices x 2 orders, and counts the statements each kind
of request sends to the database, from authentication to the answer (the outbox relay's thread
is left out: it delivers messages after the commit):

- ``first_on_shard``: one sample of an untouched shard (layers invalidated, retrains queued);
- ``joins_queued_retrain``: one more sample of that shard while its retrain is queued;
- ``subject``: a subject's samples on the other shard;
- ``already_deleted``: a sample deleted before (nothing changes);
- ``unknown``: an id the model does not hold;
- ``replay``: a repeated ``Idempotency-Key``.

``count_statements`` is what ``bench/deletion_latency.py`` and ``bench/load.py`` report, and
what ``tests/integration/pipeline/test_deletion_statements.py`` holds to a budget. With
``--idle N`` (default 200) it also times N single-sample deletions on a quiet machine (no
prediction, no retrain running), in this process: the request's own cost.

Usage: ``python bench/deletion_statements.py [--backend postgresql|sqlite|both]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # also when a test loads this file by its path

from timing import summary_ms  # noqa: E402

from service.app import create_app  # noqa: E402
from service.db import migrate  # noqa: E402
from service.db.models import Sample, Shard  # noqa: E402
from service.settings import Settings  # noqa: E402
from tests.conftest import FreshDatabase  # noqa: E402
from tests.integration.api import (  # noqa: E402
    Api,
    InProcessWorker,
    issue_keys,
    samples,
    save_tiny_backbone,
    trained_model,
)

CASES = (
    "first_on_shard",
    "joins_queued_retrain",
    "subject",
    "already_deleted",
    "unknown",
    "replay",
)
#: Thread name prefixes whose statements are not the request's: the relay sends messages (and
#: housekeeps) after the commit; the webhook dispatcher and its POST pool deliver the events a
#: commit wrote.
BACKGROUND_THREADS = ("outbox-relay", "webhook-")


class StatementCounter:
    """Counts the statements sent to every engine of this process, outside background threads."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self._lock = threading.Lock()

    def _record(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if threading.current_thread().name.startswith(BACKGROUND_THREADS):
            return
        with self._lock:
            self.statements.append(statement)

    @contextmanager
    def counting(self) -> Iterator[list[str]]:
        self.statements = []
        sa.event.listen(sa.Engine, "before_cursor_execute", self._record)
        try:
            yield self.statements
        finally:
            sa.event.remove(sa.Engine, "before_cursor_execute", self._record)


@contextmanager
def _stack(database_url: str, tmp: Path, n_samples: int) -> Iterator[tuple[Api, str, list[Any]]]:
    """The app in this process on a fresh database, with a trained tiny model of ``n_samples``
    (2 shards x 4 slices x 2 orders, placed by subject): (api, model id, rows)."""
    tmp.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        data_dir=tmp,
        database_url=database_url,
        backbone_path=save_tiny_backbone(tmp / "tiny"),
        relay_interval_s=3600,
    )
    migrate.upgrade(database_url)
    keys = issue_keys(settings)
    worker = InProcessWorker(settings)
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            api = Api(client, keys["a"])
            rows = samples(n_samples, subjects={i: f"user-{i % 12}" for i in range(n_samples)})
            model_id = trained_model(api, worker, rows, {"n_slices": 4, "placement": "subject"})
            yield api, model_id, [worker, rows]
    finally:
        worker.close()


def count_statements(database_url: str, tmp: Path) -> dict[str, int]:
    """The statements of each case's ``POST /deletions`` (see the module's docstring)."""
    counter = StatementCounter()
    counts: dict[str, int] = {}
    with _stack(database_url, tmp, 48) as (api, model_id, (worker, rows)):
        by_shard = _ids_by_shard(worker, model_id)
        first, other = sorted(by_shard)[:2]
        subject = next(r["subject_id"] for r in rows if r["external_id"] in by_shard[other])

        def delete(case: str, key: str | None = None, **target: Any) -> None:
            with counter.counting() as statements:
                response = api.delete(model_id, key, **target)
            assert response.status_code == 202, response.text
            counts[case] = len(statements)

        delete("first_on_shard", "k1", sample_ids=[by_shard[first][0]])
        delete("joins_queued_retrain", sample_ids=[by_shard[first][1]])
        delete("subject", subject_id=subject)
        delete("already_deleted", sample_ids=[by_shard[first][0]])
        delete("unknown", sample_ids=[f"nobody-{uuid.uuid4().hex[:6]}"])
        delete("replay", "k1", sample_ids=[by_shard[first][0]])
    return counts


def idle_latency(database_url: str, tmp: Path, n: int) -> dict[str, float]:
    """The 202 of ``n`` single-sample deletions one after the other, in this process, with no
    prediction and no retrain running: what the request costs on a quiet machine."""
    times: list[float] = []
    with _stack(database_url, tmp, n + 8) as (api, model_id, (_, rows)):
        for row in rows[:n]:
            started = time.perf_counter()
            response = api.delete(model_id, sample_ids=[row["external_id"]])
            times.append(time.perf_counter() - started)
            assert response.status_code == 202, response.text
    return {"deletions": n, **summary_ms(times)}


def _ids_by_shard(worker: InProcessWorker, model_id: str) -> dict[int, list[str]]:
    with worker.factory() as session:
        rows = session.execute(
            sa.select(Shard.index, Sample.external_id)
            .join(Shard, Sample.shard_id == Shard.id)
            .where(Sample.model_id == uuid.UUID(model_id))
            .order_by(Sample.id)
        )
        by_shard: dict[int, list[str]] = {}
        for shard, external_id in rows:
            by_shard.setdefault(shard, []).append(external_id)
        return by_shard


def measure(backend: str, idle: int = 0) -> dict[str, Any]:
    """:func:`count_statements` (and, with ``idle``, :func:`idle_latency` of that many
    deletions) on fresh databases of ``backend`` (dropped afterwards)."""
    with tempfile.TemporaryDirectory() as tmp:
        databases = FreshDatabase(backend, Path(tmp))
        try:
            result: dict[str, Any] = count_statements(databases.url(), Path(tmp) / "counts")
            if idle:
                result["idle_202"] = idle_latency(databases.url(), Path(tmp) / "idle", idle)
            return result
        finally:
            databases.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("postgresql", "sqlite", "both"), default="both")
    parser.add_argument(
        "--idle", type=int, default=200, help="Deletions timed on a quiet machine (0: none)."
    )
    args = parser.parse_args()
    backends = ("postgresql", "sqlite") if args.backend == "both" else (args.backend,)
    result: dict[str, Any] = {"bench": "deletion_statements", "cases": list(CASES)}
    for backend in backends:
        result[backend] = measure(backend, args.idle)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
