"""A bounded load test on loopback with the retrain queue backlogged; prints one JSON object.

Starts ``unlearn serve`` and ``unlearn worker`` on a fresh PostgreSQL schema and a Redis
database (the tiny backbone by default, so that the run is about the API, not the encoder),
trains the target model, then queues a backlog: a second model's training, so every retrain of
the target waits behind it. For ``--duration`` seconds, ``--deleters`` threads (each with its
own app key, within the per-key write limit) send single-sample deletions at ``--rate`` each,
while ``--predictors`` threads predict without pause. Reports the requests sent, the 202's
p50/p99/max, deletion errors by status, predictions failed by status and their latency, stale
predictions (that used a layer a deletion had invalidated whose 202 had arrived before they
were sent: layer ids from the answers, invalidated layers from the 202s), the training
queue before and after, and the statements each kind of 202 costs (``deletion_statements.py``).

Usage: ``python bench/load.py [--duration 60 --deleters 4 --rate 2 --predictors 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deletion_latency import (
    Predictor,
    Stack,
    load_rows,
    on_a_stack,
    wait,
)
from deletion_statements import measure
from freshness import Deleted, invalidated_layers, stale
from timing import summary_ms

from service.db.engine import make_engine, make_session_factory, unit_of_work
from service.db.models import Role
from service.db.repositories import ApiKeyRepository, TenantRepository


def keys(stack: Stack, n: int) -> list[str]:
    engine = make_engine(stack.database_url)
    with unit_of_work(make_session_factory(engine)) as session:
        tenant = TenantRepository.from_session(session).create("load")
        repo = ApiKeyRepository.from_session(session)
        tokens = [repo.issue(tenant.id, f"k{i}", Role.app).token for i in range(n)]
    engine.dispose()
    return tokens


class Deleter(threading.Thread):
    def __init__(self, base: str, token: str, model_id: str, ids: list[str], rate: float) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        self.model_id, self.ids, self.period = model_id, ids, 1 / rate
        self.records: list[tuple[float, float, int, frozenset[int] | None]] = []  # invalidated
        self.stopped = threading.Event()

    def run(self) -> None:
        next_at = time.monotonic()
        for external_id in self.ids:
            if self.stopped.is_set():
                return
            next_at += self.period
            time.sleep(max(0.0, next_at - time.monotonic()))
            sent = time.monotonic()
            try:
                response = self.client.post(
                    "/deletions", json={"model_id": self.model_id, "sample_ids": [external_id]}
                )
                code = response.status_code
                invalidated = invalidated_layers(response.json()) if code == 202 else None
            except httpx.HTTPError:
                code, invalidated = 0, None
            self.records.append((sent, time.monotonic(), code, invalidated))


def train(client: httpx.Client, body: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    model = client.post("/models", json=body).json()
    for start in range(0, len(rows), 1000):
        client.post(f"/models/{model['id']}/samples", json={"samples": rows[start : start + 1000]})
    client.post(f"/models/{model['id']}/train")
    model_id: str = model["id"]
    return model_id


def queued_jobs(client: httpx.Client, model_id: str) -> int:
    pending: int = client.get(f"/models/{model_id}/status").json()["pending_retrains"]
    return pending


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--deleters", type=int, default=4)
    parser.add_argument("--rate", type=float, default=2.0, help="Deletions per second, each.")
    parser.add_argument("--predictors", type=int, default=2)
    parser.add_argument("--predict-rate", type=float, default=5.0, help="Per predictor.")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--backbone", default="tiny", help="`tiny` or a model folder.")
    args = parser.parse_args()

    rows = load_rows(args.samples)
    body = {
        "name": "load",
        "labels": sorted({r["label"] for r in rows}),
        "n_shards": 8,
        "n_slices": 4,
        "budget": 4,
        "epochs_per_stage": 1,
        "batch_size": 16,
        "max_length": 32,
    }
    result = on_a_stack(run, rows, body, args)
    result["statements_per_202"] = measure("postgresql")
    print(json.dumps(result, indent=2))


def run(
    stack: Stack, rows: list[dict[str, Any]], body: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    tokens = keys(stack, args.deleters + 2)
    client = httpx.Client(
        base_url=stack.base, headers={"Authorization": f"Bearer {tokens[0]}"}, timeout=60
    )
    wait(lambda: client.get("/healthz").status_code == 200, 120, "the API to start")
    target = train(client, body, rows)
    wait(lambda: client.get(f"/models/{target}").json()["status"] == "ready", 3600, "training")
    backlog = train(client, {**body, "name": "backlog", "epochs_per_stage": 3}, rows)
    backlog_at_start = queued_jobs(client, backlog)

    per = int(args.duration * args.rate) + 1
    victims = random.Random(0).sample([r["external_id"] for r in rows], per * args.deleters)
    deleters = [
        Deleter(stack.base, tokens[2 + i], target, victims[i * per : (i + 1) * per], args.rate)
        for i in range(args.deleters)
    ]
    predict_client = httpx.Client(
        base_url=stack.base, headers={"Authorization": f"Bearer {tokens[1]}"}, timeout=60
    )
    texts = [r["text"] for r in rows[:200]]
    predictors = [
        Predictor(predict_client, f"/models/{target}/predict", texts, args.predict_rate)
        for _ in range(args.predictors)
    ]
    started = time.monotonic()
    for thread in [*deleters, *predictors]:
        thread.start()
    time.sleep(args.duration)
    for stopped in [*(d.stopped for d in deleters), *(p.stopped for p in predictors)]:
        stopped.set()
    for thread in [*deleters, *predictors]:
        thread.join(60)
    elapsed = time.monotonic() - started

    deletions = [r for d in deleters for r in d.records]
    predictions = [r for p in predictors for r in p.records]
    # No prediction sent after a 202 may use a layer that deletion invalidated.
    accepted = [Deleted(done, i) for _, done, code, i in deletions if i is not None]
    stale_count = stale(predictions, accepted)
    failed_predictions: dict[str, int] = {}
    for r in predictions:
        if r.status != 200:
            failed_predictions[str(r.status)] = failed_predictions.get(str(r.status), 0) + 1
    deletion_errors: dict[str, int] = {}
    for _, _, code, _ in deletions:
        if code != 202:
            deletion_errors[str(code)] = deletion_errors.get(str(code), 0) + 1
    answers = [done - sent for sent, done, code, _ in deletions if code == 202]
    latencies = [r.done - r.sent for r in predictions if r.status == 200]
    return {
        "benchmark": "load",
        "setup": {
            "database": "postgresql",
            "broker": "redis",
            "backbone": args.backbone,
            "samples": len(rows),
            "duration_s": round(elapsed, 1),
            "deleters": args.deleters,
            "deletions_per_s_each": args.rate,
            "predictors": args.predictors,
            "predictions_per_s_each": args.predict_rate,
            "cpu_count": os.cpu_count(),
        },
        "requests_sent": len(deletions) + len(predictions),
        "deletion_202": {
            "sent": len(deletions),
            **summary_ms(answers),
            "errors": deletion_errors,
        },
        "predictions": {
            "count": len(predictions),
            "failed": failed_predictions,
            "stale_after_202": stale_count,
            **summary_ms(latencies),
        },
        "backlog": {
            "training_jobs_queued_at_start": backlog_at_start,
            "backlog_jobs_left_at_end": queued_jobs(client, backlog),
            "target_retrains_pending_at_end": queued_jobs(client, target),
        },
    }


if __name__ == "__main__":
    main()
