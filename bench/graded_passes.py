"""Measured quality and graded approximate passes over a stream of deletions, through the service.

Prints one JSON object (progress goes to stderr) and writes it to ``--output``. In one process,
on the embedded SQLite database, with the setup of ``bench/service_passes.py`` (the API app via
FastAPI's test client, the service's own job runners on the real engine): a model under
``approximate_then_exact`` with ``approximate_method: auto`` on AG News with MiniLM-L6
(``--train`` training samples over ``--shards`` shards of 4 slices, budget 2, and ``--eval``
test rows registered with ``split: "eval"``, the evaluation split its served quality is measured
on). It is trained, then measured (``schedule_due`` and ``run_measurement`` of
``service.quality``, as a housekeeping round and a worker would). Then ``--deletions`` deletions
follow one another, each ``POST /deletions`` of a random ``--share`` of the live training
samples, and for each:

1. the measurement due after the deactivation: none while the deletion's pass is pending (the
   pass's own measurement stands for it), so phase ``deactivated`` appears only when one ran;
2. the approximate job (``run_approximate_job``), which measures the model right after its
   layers serve (phase ``approximated``);
3. the retrains the deletion waits for: the queued sequence jobs that are not parked, until none
   is left (under the default ``served_first`` scheduling a touched shard's other orders stay
   parked, and the deletion must reach ``completed`` without them);
4. the measurement due then (phase ``retrained``), which grades the pass
   (``GET /models/{id}/quality``: ``grades``).

At the end the parked orders are restored (run, as ``UNLEARN_RETRAIN_RESTORE_AFTER_S`` sends them
once the deletions stop: retrain work the stream caused) and measured (phase ``restored``).

Seconds come from the database: a measurement's ``QualityMeasurement.seconds`` (scoring the
served ensemble on the evaluation rows), a job's ``finished_at - started_at`` (the approximate
pass, without its own measurement, which follows the job's end; the retrains, with the pass
statistics they store). ``grading_cost_share`` is every measurement row's seconds (the one after
training, the passes' own, those that grade, the restore's) over the seconds of every retrain
job of the stream (the restore's included); the target is at most 0.10. For comparison,
``measurement_wall_seconds`` times the same work around the runner calls (reading the served
model and the rows, scoring, recording, grading): ``run_measurement``, and
``run_approximate_job`` less its job's seconds.

Usage: python bench/graded_passes.py [--train 1000 --eval 80 --shards 2 --deletions 8
--threads 1]. About 25 minutes with the defaults on a shared 2-core machine with a test run
beside it (load average about 4), 4 of them training. Measuring costs in proportion to
``--eval`` (``--eval 300``: 0.31 of the retrains' seconds; see bench/README.md).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from agnews import load_split  # noqa: E402
from service_passes import (  # noqa: E402
    Service,
    add_common_arguments,
    create_auto_model,
    model_config,
    running,
    write_report,
)

from service.approximation import runner as approximate_runner  # noqa: E402
from service.db.models import Job, JobKind, QualityMeasurement  # noqa: E402
from service.db.models.job_params import ApproximateParams  # noqa: E402
from service.quality.runner import run_measurement  # noqa: E402
from service.quality.service import schedule_due  # noqa: E402
from service.training import runner as training_runner  # noqa: E402

OUTPUT = ROOT / "bench" / "results-graded-passes.json"


def log(message: str) -> None:
    print(f"[graded-passes] {message}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument(
        "--eval", type=int, default=80, help="Rows of the evaluation split (8 %% of --train)."
    )
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--budget", type=int, default=2)
    parser.add_argument("--deletions", type=int, default=8)
    parser.add_argument(
        "--share", type=float, default=0.01, help="Of the live training samples, per deletion."
    )
    parser.add_argument("--output", type=Path, default=OUTPUT)
    return parser.parse_args(argv)


class Stream(Service):
    """The service of ``service_passes`` and what this bench adds: measurements, and only the
    retrains a deletion waits for."""

    def dispatched(self) -> list[uuid.UUID]:
        """Queued sequence jobs that were sent to the workers (not parked nor held)."""
        return self.queued_where(Job.sequence_id.is_not(None), Job.deferred_until.is_(None))

    def retrain(self) -> tuple[float, int]:
        """Run the dispatched sequence jobs until none is left: (their seconds, jobs)."""
        seconds, ran = 0.0, 0
        while jobs := self.dispatched():
            more, _ = self.run_sequences(jobs)
            seconds, ran = seconds + more, ran + len(jobs)
        return seconds, ran

    def restore(self) -> tuple[float, int]:
        """Run the parked retrains (what ``UNLEARN_RETRAIN_RESTORE_AFTER_S`` sends once the
        deletions stop): (their seconds, jobs)."""
        return self.run_sequences(self.queued_where(Job.sequence_id.is_not(None)))

    def run_sequences(self, job_ids: list[uuid.UUID]) -> tuple[float, int]:
        """Run these sequence jobs: (their seconds, jobs)."""
        seconds = 0.0
        for job_id in job_ids:
            training_runner.run_sequence_job(self.transaction, self.engine, job_id)
            with self.factory() as session:
                seconds += session.get_one(Job, job_id).run_seconds
        return seconds, len(job_ids)

    def measure(self) -> tuple[QualityMeasurement | None, float]:
        """Queue the measurement due (as housekeeping does) and run it: the measurement (None
        when none was due) and the wall seconds of running it."""
        with self.transaction() as session:
            schedule_due(session)
        start = time.perf_counter()
        measurement = None
        for job_id in self.queued_where(Job.kind == JobKind.measure_quality):
            measurement = run_measurement(self.transaction, self.engine, job_id)
        return measurement, time.perf_counter() - start

    def approximate(self) -> tuple[Job, QualityMeasurement | None, float]:
        """Run the queued pass: its job, its own measurement, and the wall seconds of the
        runner after the job's end (the measurement)."""
        (job_id,) = self.queued_where(Job.kind == JobKind.approximate)
        start = time.perf_counter()
        approximate_runner.run_approximate_job(self.transaction, self.engine, job_id)
        wall = time.perf_counter() - start
        with self.factory() as session:
            job = session.get_one(Job, job_id)
            session.expunge(job)
            measured = session.scalar(
                sa.select(QualityMeasurement).where(QualityMeasurement.job_id == job_id)
            )
            if measured is not None:
                session.expunge(measured)
        return job, measured, max(wall - job.run_seconds, 0.0)

    def all_measurement_seconds(self) -> float:
        with self.factory() as session:
            return float(session.scalar(sa.select(sa.func.sum(QualityMeasurement.seconds))) or 0)

    def all_retrain_seconds(self) -> tuple[float, int]:
        with self.factory() as session:
            jobs = session.scalars(
                sa.select(Job).where(Job.kind == JobKind.retrain, Job.finished_at.is_not(None))
            ).all()
            return sum(j.run_seconds for j in jobs), len(jobs)


def point(deletion: int, phase: str, m: QualityMeasurement | None) -> dict[str, Any]:
    if m is None:
        raise SystemExit(f"deletion {deletion}: no measurement for phase {phase}")
    return {
        "deletion": deletion,
        "phase": phase,
        "serving_generation": m.serving_generation,
        "accuracy": None if m.value is None else round(m.value, 2),
        "served_depth": round(m.served_depth, 3),
        "measured_seconds": round(m.seconds, 3),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    train = load_split(args.data / "train.tsv", args.train, args.seed)
    held_out = load_split(args.data / "test.tsv", args.eval, args.seed + 1)
    names = sorted({label for _, label in train})
    config = model_config(args, n_shards=args.shards, n_slices=args.slices, budget=args.budget)
    settings_report = {
        **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "config": config,
        "policy": "approximate_then_exact",
        "approximate_method": "auto",
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }
    started = time.perf_counter()
    over_time: list[dict[str, Any]] = []
    passes: list[dict[str, Any]] = []
    wall = 0.0  # measuring, timed around the runner calls
    with running(Stream, "graded-passes-") as service:
        model_id = create_auto_model(service, names, config)
        rows = [
            {"external_id": f"agnews-{i:05d}", "label": label, "text": text}
            for i, (text, label) in enumerate(train)
        ] + [
            {"external_id": f"eval-{i:05d}", "label": label, "text": text, "split": "eval"}
            for i, (text, label) in enumerate(held_out)
        ]
        stored = service.call("POST", f"/models/{model_id}/samples", {"samples": rows})
        if stored["eval_samples"] != len(held_out):
            raise SystemExit(f"the evaluation split holds {stored['eval_samples']}")
        service.call("POST", f"/models/{model_id}/train", expect=202)
        log(f"training {len(train)} samples, {len(held_out)} evaluation rows")
        training_s, _, _ = service.run_training(JobKind.train)
        measured, seconds = service.measure()
        wall += seconds
        over_time.append(point(0, "trained", measured))
        log(f"trained in {training_s:.1f} s; {over_time[-1]}")

        live = list(range(len(train)))
        rng = random.Random(args.seed)
        for i in range(1, args.deletions + 1):
            forget = sorted(rng.sample(live, max(1, round(args.share * len(live)))))
            live = sorted(set(live) - set(forget))
            deletion = service.call(
                "POST",
                "/deletions",
                {"model_id": model_id, "sample_ids": [f"agnews-{j:05d}" for j in forget]},
                expect=202,
            )
            measured, seconds = service.measure()  # none while the pass is pending
            wall += seconds
            if measured is not None:
                over_time.append(point(i, "deactivated", measured))
            job, measured, seconds = service.approximate()
            wall += seconds
            over_time.append(point(i, "approximated", measured))
            params = ApproximateParams.of(job)
            retrain_s, jobs = service.retrain()
            status = service.call("GET", f"/deletions/{deletion['id']}")["status"]
            if status != "completed":
                raise SystemExit(f"deletion {i} is {status} after its retrains")
            measured, seconds = service.measure()
            wall += seconds
            over_time.append(point(i, "retrained", measured))
            report = service.call("GET", f"/models/{model_id}/quality?limit=500")
            grades = [g for g in report["grades"] if g["pass_job_id"] == str(job.id)]
            passes.append(
                {
                    "deletion": i,
                    "forget": len(forget),
                    "method": params.method,
                    "reason": params.method_reason,
                    "grade": (
                        {k: grades[0][k] for k in ("gap", "cost_share", "with_deleted")}
                        | {"grade": grades[0]["grade"]}
                        if grades
                        else None
                    ),
                    "pass_status": job.status.value,
                    "pass_seconds": round(job.run_seconds, 3),
                    "retrain_seconds": round(retrain_s, 2),
                    "retrain_jobs": jobs,
                    "measurement_seconds": round(
                        sum(p["measured_seconds"] for p in over_time if p["deletion"] == i), 3
                    ),
                }
            )
            gap = grades[0]["gap"] if grades else None
            log(
                f"deletion {i}: {params.method} in {job.run_seconds:.2f} s, retrain "
                f"{retrain_s:.1f} s ({jobs} job(s)), gap {gap}; "
                + ", ".join(
                    f"{p['phase']} {p['accuracy']}" for p in over_time if p["deletion"] == i
                )
            )
        # The touched shards' other orders, parked while their shard served at full depth, are
        # retrained at last (their restore): retrain work the stream caused too.
        restore_s, restored = service.restore()
        measured, seconds = service.measure()  # none when no restore changed what is served
        wall += seconds
        if measured is not None:
            over_time.append(point(args.deletions, "restored", measured))
        log(f"restored {restored} parked order(s) in {restore_s:.1f} s; {over_time[-1]}")
        methods = service.call("GET", f"/models/{model_id}/quality?limit=500")["methods"]
        measuring_s = service.all_measurement_seconds()
        retrain_total, retrain_jobs = service.all_retrain_seconds()
    return {
        "settings": settings_report,
        "training_seconds": round(training_s, 2),
        "accuracy_over_time": over_time,
        "passes": passes,
        "auto_choices": [p["method"] for p in passes],
        "methods": methods,
        "grading_cost_share": round(measuring_s / retrain_total, 4) if retrain_total else None,
        "grading_cost_share_target": 0.10,
        "measurement_seconds_total": round(measuring_s, 2),
        "measurement_wall_seconds": round(wall, 2),
        "grading_cost_share_wall": round(wall / retrain_total, 4) if retrain_total else None,
        "retrain_seconds_total": round(retrain_total, 2),
        "retrain_jobs": retrain_jobs,
        "restore_seconds": round(restore_s, 2),
        "restore_jobs": restored,
        "load_average_at_end": round(os.getloadavg()[0], 2),
        "elapsed_s": round(time.perf_counter() - started, 1),
        "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    write_report(run(args), args.output)


if __name__ == "__main__":
    main()
