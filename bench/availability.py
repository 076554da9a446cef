"""Availability while unlearning: placement `sample` vs `subject`, every order at once vs the
served order first; prints one JSON object.

For each configuration a fresh stack (``unlearn serve`` and ``unlearn worker``, as in
``deletion_latency.py``) trains a model on AG News rows grouped into data subjects, measures the
clean model's accuracy on held-out rows, then, with a client predicting on those rows without
pause:

1. one subject's deletion: live shards right after its 202, refused predictions until it
   completes, its time to ``completed`` and its retrain work (sample-epochs);
2. one random 1 % deletion (rows of many subjects): the same;
3. a stream of subject deletions at ``--rate`` for ``--seconds``: refused predictions, accuracy
   of the served answers over time against the clean model, served depth over time, deletion to
   ``completed`` p50/p99 and retrain sample-epochs per deletion.

Work is read from the lineage database (samples x epochs of the layers each job kind trained),
so training the model is the baseline of the same run. Parked retrains (served-first scheduling)
do not run within the bench (``UNLEARN_RETRAIN_RESTORE_AFTER_S`` is an hour) and are counted.

Usage: ``python bench/availability.py [--backbone tiny] [--configs subject/served_first,...]``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deletion_latency import (
    AG_NEWS,
    Stack,
    bench_model,
    log,
    save_tiny_backbone,
    settle,
    wait,
)

from service.db.models import JobKind

CONFIGS = ("sample/all_orders", "subject/all_orders", "sample/served_first", "subject/served_first")


def load(
    n_train: int, n_test: int, subject_size: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = []
    with AG_NEWS.open(encoding="utf-8") as f:
        for line in f:
            text, _, label = line.rstrip("\n").rpartition("\t")
            rows.append((text, label))
            if len(rows) == n_train + n_test:
                break
    random.Random(0).shuffle(rows)
    train = [
        {
            "external_id": f"n{i:05d}",
            "label": label,
            "text": text,
            "subject_id": f"subject-{i // subject_size:04d}",
        }
        for i, (text, label) in enumerate(rows[:n_train])
    ]
    test = [{"text": text, "label": label} for text, label in rows[n_train:]]
    return train, test


class Prober(threading.Thread):
    """Predicts the probe rows without pause; records (time, HTTP status, accuracy or None)."""

    def __init__(self, client: httpx.Client, url: str, probe: list[dict[str, Any]]) -> None:
        super().__init__(daemon=True)
        self.client, self.url, self.probe = client, url, probe
        self.records: list[tuple[float, int, float | None]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        texts = [r["text"] for r in self.probe]
        while not self.stopped.is_set():
            at = time.monotonic()
            try:
                response = self.client.post(self.url, json={"texts": texts})
                code = response.status_code
            except httpx.HTTPError:
                code = 0
            accuracy = None
            if code == 200:
                labels = [p["label"] for p in response.json()["predictions"]]
                accuracy = sum(a == r["label"] for a, r in zip(labels, self.probe, strict=True))
                accuracy /= len(self.probe)
            self.records.append((at, code, accuracy))
            time.sleep(0.2)

    def window(self, start: float, end: float) -> list[tuple[float, int, float | None]]:
        return [r for r in self.records if start <= r[0] <= end]


def refused(records: list[tuple[float, int, float | None]]) -> int:
    return sum(1 for _, code, _ in records if code != 200)


def one_deletion(
    stack: Stack,
    client: httpx.Client,
    prober: Prober,
    model_id: str,
    body: dict[str, Any],
    n_shards: int,
    settle_s: float,
) -> dict[str, Any]:
    """One deletion alone: live shards right after its 202, refusals and work until done."""
    work_before = stack.retrain_sample_epochs()
    started = time.monotonic()
    deletion = client.post("/deletions", json={"model_id": model_id, **body}).json()
    status = client.get(f"/models/{model_id}/status").json()
    done = settle(client, [deletion["id"]], settle_s)
    ended = time.monotonic()
    return {
        "deleted": deletion["counts"]["deleted"],
        "live_shards_right_after": status["estimated_quality"]["live_shards"],
        "served_depth_right_after": status["estimated_quality"]["served_depth"],
        "shards_live_at_least_m_minus_1_of_m": status["estimated_quality"]["live_shards"]
        >= (n_shards - 1) / n_shards,
        "refused_predictions": refused(prober.window(started, ended)),
        "completed": done["completed"] == 1,
        "to_completed_s": round(ended - started, 1),
        "retrain_sample_epochs": stack.retrain_sample_epochs() - work_before,
    }


def run_config(
    name: str, args: argparse.Namespace, rows: list[dict[str, Any]], test: list[dict[str, Any]]
) -> dict[str, Any]:
    placement, scheduling = name.split("/")
    settings = {
        "UNLEARN_RETRAIN_SCHEDULING": scheduling,
        "UNLEARN_RETRAIN_RESTORE_AFTER_S": "3600",
        "UNLEARN_RETRAIN_WINDOW_S": str(args.window),
    }
    with tempfile.TemporaryDirectory() as tmp:
        backbone = str(save_tiny_backbone(Path(tmp) / "tiny")) if args.backbone == "tiny" else ""
        stack = Stack(
            Path(tmp), args.port, backbone or args.backbone, embedded=True, settings=settings
        )
        try:
            return measure(stack, name, placement, args, rows, test)
        finally:
            stack.close()


def measure(
    stack: Stack,
    name: str,
    placement: str,
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    test: list[dict[str, Any]],
) -> dict[str, Any]:
    client = httpx.Client(
        base_url=stack.base, headers={"Authorization": f"Bearer {stack.key()}"}, timeout=60
    )
    wait(lambda: client.get("/healthz").status_code == 200, 120, "the API to start")
    body = bench_model(f"availability-{name}", rows, args.shards, args.slices, placement=placement)
    model = client.post("/models", json=body).json()
    model_id = model["id"]
    for start in range(0, len(rows), 1000):
        client.post(f"/models/{model_id}/samples", json={"samples": rows[start : start + 1000]})
    log(f"{name}: training")
    started = time.monotonic()
    job = client.post(f"/models/{model_id}/train").json()
    wait(lambda: client.get(job["job_url"]).json()["status"] == "succeeded", 7200, "training")
    training_s = time.monotonic() - started
    training_work = stack.retrain_sample_epochs(JobKind.train)

    probe = test[: args.probe]
    prober = Prober(
        httpx.Client(base_url=client.base_url, headers=client.headers, timeout=60),
        f"/models/{model_id}/predict",
        probe,
    )
    prober.start()
    wait(lambda: len(prober.records) >= 5, 120, "the first predictions")
    clean = [a for _, _, a in prober.records if a is not None]
    clean_accuracy = statistics.fmean(clean)

    subjects = sorted({r["subject_id"] for r in rows})
    rng = random.Random(1)
    rng.shuffle(subjects)
    log(f"{name}: one subject's deletion")
    single = one_deletion(
        stack, client, prober, model_id, {"subject_id": subjects.pop()}, args.shards, args.settle
    )
    log(f"{name}: one random 1 % deletion")
    live_ids = [r["external_id"] for r in rows]
    one_percent = rng.sample(live_ids, max(1, len(rows) // 100))
    random_one = one_deletion(
        stack, client, prober, model_id, {"sample_ids": one_percent}, args.shards, args.settle
    )

    log(f"{name}: a stream of subject deletions for {args.seconds} s")
    work_before = stack.retrain_sample_epochs()
    depth: list[tuple[float, float, float]] = []
    ids: list[str] = []
    stream_start = time.monotonic()
    next_at = stream_start
    while time.monotonic() - stream_start < args.seconds and subjects:
        next_at += 1 / args.rate
        while time.monotonic() < next_at:
            quality = client.get(f"/models/{model_id}/status").json()["estimated_quality"]
            depth.append(
                (time.monotonic() - stream_start, quality["live_shards"], quality["served_depth"])
            )
            time.sleep(min(1.0, max(0.0, next_at - time.monotonic())))
        response = client.post(
            "/deletions", json={"model_id": model_id, "subject_id": subjects.pop()}
        )
        ids.append(response.json()["id"])
    last_arrival = time.monotonic()
    done = settle(client, ids, args.settle)
    stream_end = time.monotonic()
    prober.stopped.set()
    prober.join(60)
    window = prober.window(stream_start, stream_end)
    answered = [(t - stream_start, a) for t, _, a in window if a is not None]
    buckets: dict[int, list[float]] = {}
    for t, accuracy in answered:
        buckets.setdefault(int(t // 10) * 10, []).append(accuracy)
    status = client.get(f"/models/{model_id}/status").json()
    parked = sum(
        1
        for shard in status["shards"]
        for sequence in shard["sequences"]
        for job in sequence["pending"]
        if job["waiting"]
    )
    mean_accuracy = statistics.fmean(a for _, a in answered) if answered else 0.0
    stream_work = stack.retrain_sample_epochs() - work_before
    return {
        "config": {"placement": placement, "scheduling": name.split("/")[1]},
        "training": {"seconds": round(training_s, 1), "sample_epochs": training_work},
        "clean_accuracy": round(clean_accuracy, 4),
        "single_subject_deletion": {
            **single,
            "work_vs_training": round(single["retrain_sample_epochs"] / training_work, 3),
        },
        "random_1_percent_deletion": {
            **random_one,
            "work_vs_training": round(random_one["retrain_sample_epochs"] / training_work, 3),
        },
        "subject_stream": {
            "deletions": len(ids),
            "seconds": round(last_arrival - stream_start, 1),
            "refused_predictions": refused(window),
            "predictions": len(window),
            "accuracy_mean": round(mean_accuracy, 4),
            "accuracy_min": round(min((a for _, a in answered), default=0.0), 4),
            "accuracy_gap_to_clean_points": round(100 * (clean_accuracy - mean_accuracy), 2),
            "accuracy_by_10s": {
                str(k): round(statistics.fmean(v), 4) for k, v in sorted(buckets.items())
            },
            "served_depth_min": round(min((d for _, _, d in depth), default=1.0), 3),
            "live_shards_min": round(min((live for _, live, _ in depth), default=1.0), 3),
            "served_depth_by_10s": {
                str(k): round(statistics.fmean(d for t, _, d in depth if int(t // 10) * 10 == k), 3)
                for k in sorted({int(t // 10) * 10 for t, _, _ in depth})
            },
            "completion": done,
            "retrain_sample_epochs_per_deletion": round(stream_work / max(1, len(ids)), 1),
            "work_per_deletion_vs_training": round(
                stream_work / max(1, len(ids)) / training_work, 4
            ),
            "parked_retrains_at_end": parked,
        },
        "refused_predictions_total": refused(prober.records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="placement/scheduling")
    parser.add_argument("--samples", type=int, default=800)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--probe", type=int, default=64, help="held-out rows each prediction")
    parser.add_argument("--subject-size", type=int, default=20, help="rows per data subject")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the stream")
    parser.add_argument("--rate", type=float, default=0.2, help="subject deletions per second")
    parser.add_argument("--window", type=float, default=2.0, help="UNLEARN_RETRAIN_WINDOW_S")
    parser.add_argument("--settle", type=float, default=900.0)
    parser.add_argument("--port", type=int, default=8795)
    parser.add_argument("--backbone", default="", help="model folder, or `tiny` (default MiniLM)")
    args = parser.parse_args()
    rows, test = load(args.samples, args.test, args.subject_size)
    results = {name: run_config(name, args, rows, test) for name in args.configs.split(",")}
    m = args.shards
    subject_first = results.get("subject/served_first")
    report: dict[str, Any] = {
        "benchmark": "availability",
        "setup": {
            "data": "AG News",
            "backbone": args.backbone or "all-MiniLM-L6-v2",
            "samples": args.samples,
            "subjects": args.samples // args.subject_size,
            "probe_rows": args.probe,
            "model": {"n_shards": m, "n_slices": args.slices, "budget": args.slices},
            "stream": {"seconds": args.seconds, "subject_deletions_per_s": args.rate},
            "database": "sqlite",
            "broker": "sqlalchemy",
        },
        "configs": results,
    }
    if subject_first is not None:
        single = subject_first["single_subject_deletion"]
        report["targets"] = {
            "subject_deletion_no_refused_prediction": single["refused_predictions"] == 0
            and subject_first["subject_stream"]["refused_predictions"] == 0,
            "subject_deletion_keeps_m_minus_1_of_m_shards": single[
                "shards_live_at_least_m_minus_1_of_m"
            ],
            "random_1_percent_work_at_most_half_of_training": subject_first[
                "random_1_percent_deletion"
            ]["work_vs_training"]
            <= 0.5,
            "subject_deletion_work_at_most_1_over_m_of_training": single["work_vs_training"]
            <= 1 / m,
            "stream_accuracy_within_2_points_of_clean": subject_first["subject_stream"][
                "accuracy_gap_to_clean_points"
            ]
            <= 2,
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
