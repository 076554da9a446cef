"""Deletion latency against the running service; prints one JSON object.

Starts ``unlearn serve`` and ``unlearn worker`` (MiniLM backbone) on a fresh PostgreSQL schema
and a Redis database (or, with ``--embedded``, on the embedded defaults: SQLite and the
SQLAlchemy broker, no server), on ``--device`` (``cuda``: a GPU worker), trains a model on AG
News, then sends N single-sample deletions while a second client predicts without pause and the
worker retrains behind them, and waits (``--settle-s``) for every deletion to complete. It
reports:

- the ``POST /deletions`` answer (202) latency, p50/p99;
- deletion-to-first-clean-prediction: from sending the deletion to the first prediction that
  used none of the layers it invalidated (the answer's ``shards[].layers`` against the 202's
  ``layers_invalidated``; ``bench/freshness.py``), and how many probes did use one;
- predictions: count, failed (non-200), slow (over 1 s), p50/p99, and stale ones: that used a
  layer invalidated by a deletion whose 202 had arrived before the prediction was sent;
- the statements each kind of 202 costs (``bench/deletion_statements.py``);
- completion: deletion to ``completed`` p50/p99, how long after the last deletion arrived the
  last one completed, and the retrain work per deletion (sample-epochs of the retrain jobs'
  layers, from the lineage database);
- the baseline of the same run: training the model from scratch, i.e. how long a service that
  retrains fully would keep serving the deleted data; and the ratio of the two.

Usage: ``python bench/deletion_latency.py [--deletions 1000] [--rate 4] [--backbone tiny]``
(``--help`` for all options); needs the machine's PostgreSQL and Redis
(``UNLEARN_TEST_DATABASE_URL``, ``UNLEARN_TEST_REDIS_URL``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deletion_statements import measure  # noqa: E402
from freshness import (  # noqa: E402
    Answered,
    Deleted,
    first_clean,
    invalidated_layers,
    layers_of,
    stale,
)
from timing import summary_ms  # noqa: E402

from service.db import migrate  # noqa: E402
from service.db.engine import make_engine, make_session_factory, unit_of_work  # noqa: E402
from service.db.models import Job, JobKind, Layer, Model, Role  # noqa: E402
from service.db.repositories import ApiKeyRepository, TenantRepository  # noqa: E402

AG_NEWS = (
    Path(os.environ.get("BENCH_DATA_DIR", ROOT.parent / "shared" / "data")) / "agnews" / "train.tsv"
)
PG_URL = os.environ.get(
    "UNLEARN_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("UNLEARN_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
SLOW_S = 1.0


def load_rows(n: int) -> list[dict[str, Any]]:
    rows = []
    with AG_NEWS.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            text, _, label = line.rstrip("\n").rpartition("\t")
            if i >= n:
                break
            rows.append({"external_id": f"n{i:05d}", "label": label, "text": text})
    return rows


class Stack:
    """A fresh schema (or SQLite files, ``embedded``), the API and a worker process on
    ``device``, torn down on exit."""

    def __init__(
        self,
        tmp: Path,
        port: int,
        backbone: str,
        *,
        embedded: bool = False,
        device: str = "cpu",
        settings: dict[str, str] | None = None,
    ) -> None:
        self.embedded = embedded
        servers: dict[str, str] = {}
        if embedded:  # the defaults of `make run`: SQLite and the SQLAlchemy broker under tmp
            self.database_url = f"sqlite:///{tmp / 'lineage.sqlite3'}"
        else:
            self.schema = f"bench_{uuid.uuid4().hex[:10]}"
            self.admin = sa.create_engine(PG_URL)
            with self.admin.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{self.schema}"'))
            url = sa.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={self.schema}"})
            self.database_url = url.render_as_string(hide_password=False)
            redis.Redis.from_url(REDIS_URL).flushdb()
            servers = {"UNLEARN_DATABASE_URL": self.database_url, "UNLEARN_BROKER_URL": REDIS_URL}
        migrate.upgrade(self.database_url)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("UNLEARN_")},
            **servers,
            "UNLEARN_DATA_DIR": str(tmp),
            "UNLEARN_DEVICE": device,
            "UNLEARN_LOG_LEVEL": "warning",
            "UNLEARN_RELAY_INTERVAL_S": "0.2",
            **({"UNLEARN_BACKBONE_PATH": backbone} if backbone else {}),
            **(settings or {}),
        }
        self.logs = tmp / "logs.txt"
        out = self.logs.open("w")
        cli = [sys.executable, "-m", "service.cli"]
        # The worker trains with one thread so that the API keeps a core (as with GPU workers
        # on their own machines).
        self.worker = subprocess.Popen(  # noqa: S603 - our own CLI
            [*cli, "worker"], env={**env, "OMP_NUM_THREADS": "1"}, stdout=out, stderr=out, cwd=ROOT
        )
        self.api = subprocess.Popen(  # noqa: S603 - our own CLI
            [*cli, "serve", "--port", str(port)], env=env, stdout=out, stderr=out, cwd=ROOT
        )
        self.base = f"http://127.0.0.1:{port}"

    def key(self) -> str:
        engine = make_engine(self.database_url)
        with unit_of_work(make_session_factory(engine)) as session:
            tenant = TenantRepository.from_session(session).create("bench")
            token = ApiKeyRepository.from_session(session).issue(tenant.id, "b", Role.app).token
        engine.dispose()
        return token

    def close(self) -> None:
        for process in (self.api, self.worker):
            process.terminate()
        for process in (self.api, self.worker):
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.embedded:
            return
        with self.admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
        self.admin.dispose()

    def retrain_sample_epochs(self, kind: JobKind = JobKind.retrain) -> int:
        """Samples x epochs of every layer the ``kind`` jobs trained (activated or not)."""
        engine = make_engine(self.database_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.select(Layer.trained_sample_count, Model.config)
                    .join(Job, Layer.job_id == Job.id)
                    .join(Model, Job.model_id == Model.id)
                    .where(Job.kind == kind)
                )
                return sum(count * config["epochs_per_stage"] for count, config in rows)
        finally:
            engine.dispose()


def save_tiny_backbone(path: Path) -> Path:
    """A random 4-layer BERT (hidden 32) with MiniLM's tokenizer, saved as a model folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from unlearning.s3t import default_backbone_path

    tokenizer = AutoTokenizer.from_pretrained(default_backbone_path())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def wait(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except httpx.TransportError:
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise TimeoutError(f"{what} took more than {timeout_s} s")


class Predictor(threading.Thread):
    """Predicts without pause; records each answer with the layers it used."""

    def __init__(self, client: httpx.Client, url: str, texts: list[str], rate: float) -> None:
        super().__init__(daemon=True)
        self.client, self.url, self.texts, self.period = client, url, texts, 1 / rate
        self.records: list[Answered] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        rng = random.Random(1)
        next_at = time.monotonic()
        while not self.stopped.is_set():
            next_at += self.period
            time.sleep(max(0.0, next_at - time.monotonic()))
            sent = time.monotonic()
            try:
                response = self.client.post(self.url, json={"texts": rng.sample(self.texts, 8)})
                status = response.status_code
                layers = layers_of(response.json()) if status == 200 else None
            except httpx.HTTPError:
                status, layers = 0, None
            self.records.append(Answered(sent, time.monotonic(), status, layers))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def worker_runtime(device: str) -> dict[str, Any]:
    """The worker's device, profile and libraries, asked in a child process like it."""
    probe = (
        "import json, sys; from unlearning.device import resolve_device, runtime_info; "
        "print(json.dumps(runtime_info(resolve_device(sys.argv[1]))))"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", probe, device],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    info: dict[str, Any] = json.loads(result.stdout)
    return info


def settle(client: httpx.Client, deletion_ids: list[str], timeout_s: float) -> dict[str, Any]:
    """Wait until every deletion is completed or failed (or ``timeout_s``); their timings."""
    deadline = time.monotonic() + timeout_s
    records: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        for deletion_id in deletion_ids:
            if records.get(deletion_id, {}).get("status") not in ("completed", "failed"):
                records[deletion_id] = client.get(f"/deletions/{deletion_id}").json()
        if all(r["status"] in ("completed", "failed") for r in records.values()):
            break
        time.sleep(1.0)
    at = datetime.fromisoformat
    done = [r for r in records.values() if r["status"] == "completed"]
    to_completed = [(at(r["completed_at"]) - at(r["received_at"])).total_seconds() for r in done]
    last_arrival = max(at(r["received_at"]) for r in records.values())
    last_completed = max((at(r["completed_at"]) for r in done), default=None)
    return {
        "completed": len(done),
        "failed": sum(1 for r in records.values() if r["status"] == "failed"),
        "not_done_after_settle": sum(
            1 for r in records.values() if r["status"] not in ("completed", "failed")
        ),
        "received_to_completed": summary_ms(to_completed) if to_completed else None,
        "last_completed_after_last_arrival_s": round(
            (last_completed - last_arrival).total_seconds(), 1
        )
        if last_completed is not None
        else None,
    }


def count_deletions(client: httpx.Client, status: str) -> int:
    count, cursor = 0, None
    while True:
        params: dict[str, str | int] = {"status": status, "limit": 200}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/deletions", params=params).json()
        count += len(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deletions", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--rate", type=float, default=4.0, help="Deletions sent per second.")
    parser.add_argument(
        "--predict-rate", type=float, default=4.0, help="Predictions (8 texts) sent per second."
    )
    parser.add_argument(
        "--backbone",
        default="",
        help="Model folder (default: MiniLM-L6), or `tiny`: a random 4-layer BERT whose "
        "retrains keep pace with many deletions on a CPU (the deletion path is the same).",
    )
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument(
        "--embedded", action="store_true", help="SQLite and the SQLAlchemy broker (no servers)"
    )
    parser.add_argument("--device", default="cpu", help="UNLEARN_DEVICE of the API and worker")
    parser.add_argument(
        "--settle-s", type=float, default=600, help="How long to wait for every completion."
    )
    args = parser.parse_args()
    if args.deletions > args.samples:
        parser.error("--deletions must not exceed --samples")

    rows = load_rows(args.samples)
    model_body = bench_model("bench", rows, args.shards, args.slices)
    result = on_a_stack(run, rows, model_body, args)
    result["statements_per_202"] = measure("sqlite" if args.embedded else "postgresql")
    print(json.dumps(result, indent=2))


def bench_model(
    name: str, rows: list[dict[str, Any]], shards: int, slices: int, **settings: Any
) -> dict[str, Any]:
    """The benchmarks' model: L orders of L slices per shard, one epoch per stage."""
    return {
        "name": name,
        "labels": sorted({r["label"] for r in rows}),
        "n_shards": shards,
        "n_slices": slices,
        "budget": slices,
        "epochs_per_stage": 1,
        "learning_rate": 2e-3,
        "batch_size": 16,
        "max_length": 32,
        **settings,
    }


Run = Callable[[Stack, list[dict[str, Any]], dict[str, Any], argparse.Namespace], dict[str, Any]]


def on_a_stack(
    run: Run, rows: list[dict[str, Any]], body: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """``run`` against a fresh stack (``args.backbone``: `tiny` or a folder; ``args.port``)."""
    with tempfile.TemporaryDirectory() as tmp:
        backbone = (
            str(save_tiny_backbone(Path(tmp) / "tiny"))
            if args.backbone == "tiny"
            else args.backbone
        )
        stack = Stack(
            Path(tmp),
            args.port,
            backbone,
            embedded=getattr(args, "embedded", False),
            device=getattr(args, "device", "cpu"),
        )
        try:
            return run(stack, rows, body, args)
        finally:
            stack.close()


def run(
    stack: Stack, rows: list[dict[str, Any]], body: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    n = args.deletions
    headers = {"Authorization": f"Bearer {stack.key()}"}
    client = httpx.Client(base_url=stack.base, headers=headers, timeout=30)
    wait(lambda: client.get("/healthz").status_code == 200, 120, "the API to start")
    model = client.post("/models", json=body).json()
    for start in range(0, len(rows), 1000):
        client.post(f"/models/{model['id']}/samples", json={"samples": rows[start : start + 1000]})
    started = time.monotonic()
    job = client.post(f"/models/{model['id']}/train").json()

    def trained() -> bool:
        status = client.get(job["job_url"]).json()["status"]
        if status in ("failed", "cancelled"):
            raise RuntimeError(f"training {status}")
        return bool(status == "succeeded")

    wait(trained, 3600, "training")
    full_training_s = time.monotonic() - started

    predict_url = f"/models/{model['id']}/predict"
    texts = [r["text"] for r in rows[:200]]
    predictor_client = httpx.Client(base_url=stack.base, headers=headers, timeout=30)
    predictor = Predictor(predictor_client, predict_url, texts, args.predict_rate)
    predictor.start()

    victims = random.Random(0).sample([r["external_id"] for r in rows], n)
    answers: list[float] = []
    to_clean: list[float] = []
    dirty_probes = 0
    accepted: list[Deleted] = []
    deletion_ids: list[str] = []
    failed_deletions = 0
    next_at = time.monotonic()
    for external_id in victims:
        next_at += 1 / args.rate
        time.sleep(max(0.0, next_at - time.monotonic()))
        sent = time.monotonic()
        response = client.post(
            "/deletions",
            json={"model_id": model["id"], "sample_ids": [external_id]},
            headers={"Idempotency-Key": f"bench-{external_id}"},
        )
        answered = time.monotonic()
        if response.status_code != 202:
            failed_deletions += 1
            continue
        invalidated = invalidated_layers(response.json())
        answers.append(answered - sent)
        accepted.append(Deleted(answered, invalidated))
        deletion_ids.append(response.json()["id"])
        # The first prediction that uses none of the layers this deletion invalidated.
        clean, dirty = first_clean(client, predict_url, texts[0], sent, invalidated)
        dirty_probes += dirty
        if clean is not None:
            to_clean.append(clean)

    retraining_at_end = count_deletions(client, "retraining") + count_deletions(
        client, "deactivated"
    )
    status = client.get(f"/models/{model['id']}/status").json()
    # Predictions go on while the retrains catch up: serving while unlearning.
    log(f"waiting up to {args.settle_s} s for {len(deletion_ids)} deletions to complete")
    settled = settle(client, deletion_ids, args.settle_s)
    predictor.stopped.set()
    predictor.join(60)
    retrain_sample_epochs = stack.retrain_sample_epochs()

    # No prediction sent after a 202 may use a layer that deletion invalidated.
    stale_count = stale(predictor.records, accepted)
    records = predictor.records
    latencies = [r.done - r.sent for r in records if r.status == 200]
    failed_by_status: dict[str, int] = {}
    for r in records:
        if r.status != 200:
            failed_by_status[str(r.status)] = failed_by_status.get(str(r.status), 0) + 1
    failed = sum(failed_by_status.values())
    slow = sum(1 for r in records if r.done - r.sent > SLOW_S)
    answer = summary_ms(answers)
    clean_ms = summary_ms(to_clean)
    return {
        "benchmark": "deletion_latency",
        "setup": {
            "database": "sqlite" if args.embedded else "postgresql",
            "broker": "sqlalchemy" if args.embedded else "redis",
            "backbone": args.backbone or "all-MiniLM-L6-v2",
            "samples": len(rows),
            "deletions": n,
            "model": {k: body[k] for k in ("n_shards", "n_slices", "budget", "epochs_per_stage")},
            "cpu_count": os.cpu_count(),
            "device": args.device,
            "compute_profile": model["compute_profile"],
            "runtime": worker_runtime(args.device),
            "worker_threads": 1,
            "deletions_per_s": args.rate,
            "predictions_per_s": args.predict_rate,
        },
        "deletion_202": {**answer, "failed": failed_deletions},
        "deletion_to_clean_prediction": {
            **clean_ms,
            "never_clean": len(answers) - len(to_clean),
            "probes_with_invalidated_layers": dirty_probes,
        },
        "predictions": {
            "count": len(records),
            "failed": failed,
            "failed_by_status": failed_by_status,
            "slow_over_1s": slow,
            "stale_after_202": stale_count,
            **summary_ms(latencies),
        },
        "while_retraining": {
            "deletions_still_retraining_at_last_arrival": retraining_at_end,
            "pending_retrain_jobs_at_last_arrival": status["pending_retrains"],
        },
        "completion": {
            **settled,
            "retrain_sample_epochs": retrain_sample_epochs,
            "retrain_sample_epochs_per_deletion": round(
                retrain_sample_epochs / max(1, len(deletion_ids)), 1
            ),
        },
        "baseline": {"full_training_s": round(full_training_s, 1)},
        "ratios": {
            "clean_prediction_p99_vs_full_retraining": round(
                clean_ms["p99_ms"] / 1000 / full_training_s, 5
            ),
        },
        "targets": {
            "deletion_202_p99_under_50ms": answer["p99_ms"] < 50,
            "zero_failed_predictions": failed == 0,
            "deletion_202_p99_under_20ms": answer["p99_ms"] <= 20,
            "clean_prediction_p99_under_50ms": clean_ms["p99_ms"] <= 50,
            "no_stale_prediction_after_202": stale_count == 0 and dirty_probes == 0,
            "every_deletion_completed_within_60s_of_the_last_arrival": settled["completed"]
            == len(deletion_ids)
            and settled["last_completed_after_last_arrival_s"] <= 60,
        },
    }


if __name__ == "__main__":
    main()
