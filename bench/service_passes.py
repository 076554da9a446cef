"""Approximate passes through the service against the exact retrains they stand in for.

Prints one JSON object (progress goes to stderr) and writes it to ``--output``. In one process,
on the embedded SQLite database: the API app (FastAPI's test client: every call goes through
the real routes), a model under ``approximate_then_exact`` with ``approximate_method: auto`` on
AG News (1,000 training / 800 test samples) with MiniLM-L6, one shard of four slices, and the
service's own job runners (``run_sequence_job``, ``run_approximate_job``) for every job. Three
deletions follow one another on that model, as they would in production:

- ``random_1pct`` and ``random_10pct``: ``POST /deletions`` with that share of the live samples;
- ``whole_class``: ``POST /models/{id}/class-deletions`` for the first class (``path:
  approximate``); TA (for the gap) is on the test samples of the remaining classes.

For each: the pass ``auto`` picks runs first (its wall time through the job runner:
``pass_seconds``); the served model (status ``approximated``) is scored through ``POST
/models/{id}/predict`` (UA, RA, TA, MIA efficacy); then the deletion's exact retrains run
(``retrain_seconds``, the same sequences from the first affected stage, through the job runner)
and the exact model is scored the same way. ``ratio`` is pass / retrain and ``avg_gap`` the mean
absolute difference of the four scores. The pass statistics each trained chain stores after
training are timed apart (``statistics_seconds``: part of training, paid once per chain, not
per deletion). For comparison, ``pass_from_data_seconds`` is the same method on the same stages
computing what it needs from the shard (what every pass cost before the statistics), and
``candidates_on_the_same_chain`` scores other methods (``--candidates``, names of
``unlearning.approx.registry``; by default every method that reads the stored statistics; with
the statistics where they read them) on the chain the pass edited, in this process, against the
same retrain. A candidate runs only where it fits: a method that forgets classes only on the
whole class.

Usage: python bench/service_passes.py [--train 1000 --test 800 --threads 1]. About 15 minutes
on a shared 2-core machine with one torch thread.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import sqlalchemy as sa
import torch
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agnews import DEFAULT_DATA, load_split  # noqa: E402

from service.app import create_app  # noqa: E402
from service.approximation import runner as approximate_runner  # noqa: E402
from service.db import migrate  # noqa: E402
from service.db.engine import make_engine, make_session_factory, unit_of_work  # noqa: E402
from service.db.models import Job, JobKind, JobStatus, Role  # noqa: E402
from service.db.models.job_params import ApproximateParams  # noqa: E402
from service.db.repositories import (  # noqa: E402
    ApiKeyRepository,
    LineageRepository,
    StatisticsRepository,
    TenantRepository,
)
from service.engine import build_engine  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.training import runner as training_runner  # noqa: E402
from service.training.service import read_sequence_job  # noqa: E402
from unlearning.approx import PrefixModel, registry  # noqa: E402
from unlearning.approx.prefix_pass import MethodName, approximate_stages, examples_of  # noqa: E402
from unlearning.approx.statistics import PassStatistics  # noqa: E402
from unlearning.evaluation import avg_gap, evaluate_classifier  # noqa: E402
from unlearning.evaluation.metrics import UnlearningScores  # noqa: E402
from unlearning.families import Modality  # noqa: E402
from unlearning.s3t import S3TEngine, TrainingSample  # noqa: E402
from unlearning.s3t.config import Task  # noqa: E402
from unlearning.s3t.weights import StageWeights  # noqa: E402

OUTPUT = ROOT / "bench" / "results-service-passes.json"
S = TypeVar("S", bound="Service")


def log(message: str) -> None:
    print(f"[service-passes] {message}", file=sys.stderr, flush=True)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The data, its size, the model's input length, torch threads, the seed."""
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--test", type=int, default=800)
    parser.add_argument(
        "--cases",
        default="random_1pct,random_10pct,whole_class",
        help="Which deletions, in this order (each on the model the previous one left).",
    )
    parser.add_argument(
        "--candidates",
        default=",".join(s.name for s in registry.specs() if s.reads_statistics),
        help="Methods scored on the chain each pass edited (unlearning.approx.registry names); "
        "default: every method that reads the stored pass statistics.",
    )
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    args.candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    for name in args.candidates:
        if name not in registry.REGISTRY:
            parser.error(f"--candidates: no method `{name}`; the methods: {registry.names()}")
        reason = registry.get(name).unfit(Task.CLASSIFICATION, Modality.TEXT)
        if reason:
            parser.error(f"--candidates: {reason}")
    return args


class Timer:
    """Total seconds spent in a wrapped function (the statistics built after training)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def wrapping(self, module: Any, name: str) -> Iterator[None]:
        original: Callable[..., Any] = getattr(module, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        setattr(module, name, timed)
        try:
            yield
        finally:
            setattr(module, name, original)


class Service:
    """The app, an app key, and the job runners on the real engine."""

    def __init__(self, settings: Settings, client: TestClient, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}
        self.factory = make_session_factory(make_engine(settings.database_url))
        self.engine: S3TEngine = build_engine(settings)
        self.transaction = functools.partial(unit_of_work, self.factory)

    def call(self, method: str, url: str, body: Any = None, expect: int = 200) -> Any:
        response = self.client.request(method, url, json=body, headers=self.headers)
        if response.status_code != expect:
            raise SystemExit(f"{method} {url}: {response.status_code} {response.text}")
        return response.json()

    def queued(self, kind: JobKind) -> list[uuid.UUID]:
        return self.queued_where(
            Job.kind == kind, (Job.sequence_id.is_not(None)) | (Job.kind == JobKind.approximate)
        )

    def queued_where(self, *conditions: sa.ColumnElement[bool]) -> list[uuid.UUID]:
        """The queued jobs that meet ``conditions``, oldest first."""
        with self.factory() as session:
            return list(
                session.scalars(
                    sa.select(Job.id)
                    .where(Job.status == JobStatus.queued, *conditions)
                    .order_by(Job.created_at, Job.id)
                )
            )

    def run_training(self, kind: JobKind) -> tuple[float, float, int]:
        """Run the queued sequence jobs of ``kind``: (seconds without the statistics, seconds
        building the statistics, jobs)."""
        timer, ran, start = Timer(), 0, time.perf_counter()
        with timer.wrapping(training_runner, "chain_statistics"):
            while jobs := self.queued(kind):
                for job_id in jobs:
                    training_runner.run_sequence_job(self.transaction, self.engine, job_id)
                    ran += 1
        total = time.perf_counter() - start
        return total - timer.seconds, timer.seconds, ran

    def run_pass(self) -> tuple[float, str]:
        (job_id,) = self.queued(JobKind.approximate)
        start = time.perf_counter()
        approximate_runner.run_approximate_job(self.transaction, self.engine, job_id)
        seconds = time.perf_counter() - start
        job = self.call("GET", f"/jobs/{job_id}")
        if job["status"] != "succeeded":
            raise SystemExit(f"the pass did not serve: {job}")
        return seconds, str(job["error"])

    def logits(self, model_id: str, texts: list[str]) -> np.ndarray:
        rows = []
        for start in range(0, len(texts), 256):
            served = self.call(
                "POST", f"/models/{model_id}/predict", {"texts": texts[start : start + 256]}
            )
            rows += [p["scores"] for p in served["predictions"]]
        return np.array(rows, dtype=np.float64)


def model_config(args: argparse.Namespace, **shape: int) -> dict[str, Any]:
    """The S3T settings of the benches' AG News models; ``shape``: shards, slices, budget."""
    return {
        **shape,
        "lora_rank": 8,
        "lora_alpha": 16.0,
        "epochs_per_stage": 1,
        "learning_rate": 0.002,
        "batch_size": 16,
        "max_length": args.max_length,
        "seed": args.seed,
    }


@contextmanager
def running(kind: type[S], prefix: str) -> Iterator[S]:
    """The app on an embedded SQLite database in a temporary folder, with an app key and the
    job runners (``kind``: :class:`Service` or a subclass)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        settings = Settings(data_dir=Path(tmp), approximate_head_start_s=600)
        migrate.upgrade(settings.database_url)
        token = issue_key(settings)
        with TestClient(create_app(settings)) as client:
            yield kind(settings, client, token)


def create_auto_model(service: Service, names: list[str], config: dict[str, Any]) -> str:
    """A text classifier under ``approximate_then_exact`` with ``auto`` passes; its id."""
    model = service.call(
        "POST",
        "/models",
        {
            "name": "agnews",
            "labels": names,
            "placement": "sample",
            "unlearning_policy": "approximate_then_exact",
            "approximate_method": "auto",
            **config,
        },
        expect=201,
    )
    return str(model["id"])


def issue_key(settings: Settings) -> str:
    engine = make_engine(settings.database_url)
    with unit_of_work(make_session_factory(engine)) as session:
        tenant = TenantRepository.from_session(session).create("bench")
        token = ApiKeyRepository.from_session(session).issue(tenant.id, "bench", Role.app).token
    engine.dispose()
    return token


def scores(
    service: Service,
    model_id: str,
    texts: dict[str, list[str]],
    labels: dict[str, np.ndarray],
) -> UnlearningScores:
    logits = {name: service.logits(model_id, texts[name]) for name in ("forget", "retain", "test")}
    return evaluate_classifier(
        (logits["forget"], labels["forget"]),
        (logits["retain"], labels["retain"]),
        (logits["test"], labels["test"]),
    )


class LastChain:
    """The chain the last pass edited, its stages and statistics, and the shard's live
    samples: to run other methods on it in this process (nothing stored or served)."""

    def __init__(self, service: Service) -> None:
        with service.factory() as session:
            job = session.scalars(
                sa.select(Job)
                .where(Job.kind == JobKind.approximate)
                .order_by(Job.created_at.desc())
            ).first()
            assert job is not None
            planned = ApproximateParams.of(job).sequences[0]
            chain = planned.chain
            refs = LineageRepository.from_session(session).artifact_refs(chain)
            stored = StatisticsRepository.from_session(session).of(chain[-1])
            work = read_sequence_job(session, planned.sequence_id, 1)
        self.engine = service.engine
        self.config = work.spec.config
        self.retain = work.samples
        self.first = planned.from_stage - 1
        self.stages = [self.engine.load_stage(refs[i]) for i in chain]
        self.statistics = (
            PassStatistics.from_bytes(self.engine.store.get(stored.artifact_ref))
            if stored
            else None
        )

    def run(
        self, method: MethodName, forget: list[TrainingSample], *, from_data: bool
    ) -> tuple[list[StageWeights], float]:
        """The edited chain and the seconds the method took (encoding included)."""
        backbone, config = self.engine.backbone, self.config
        start = time.perf_counter()
        reads = registry.get(method).reads_statistics
        statistics = None if from_data or not reads else self.statistics
        edited = approximate_stages(
            backbone,
            config,
            self.stages,
            self.first,
            examples_of(backbone, config, forget),
            None if statistics else examples_of(backbone, config, self.retain),
            method,
            statistics=statistics,
        )
        return [*self.stages[: self.first], *edited], time.perf_counter() - start

    def scores(
        self,
        stages: list[StageWeights],
        texts: dict[str, list[str]],
        labels: dict[str, np.ndarray],
    ) -> UnlearningScores:
        backbone, config = self.engine.backbone, self.config
        model = PrefixModel(backbone, stages, editable=(), target_modules=config.target_modules)
        logits = {}
        with torch.no_grad():
            for name in ("forget", "retain", "test"):
                parts = [
                    model(backbone.encode(texts[name][i : i + 256], config.max_length))
                    for i in range(0, len(texts[name]), 256)
                ]
                logits[name] = torch.cat(parts).numpy()
        return evaluate_classifier(
            (logits["forget"], labels["forget"]),
            (logits["retain"], labels["retain"]),
            (logits["test"], labels["test"]),
        )


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    train = load_split(args.data / "train.tsv", args.train, args.seed)
    test = load_split(args.data / "test.tsv", args.test, args.seed + 1)
    names = sorted({label for _, label in train})
    train_labels = np.array([names.index(label) for _, label in train])
    test_labels = np.array([names.index(label) for _, label in test])
    config = model_config(args, n_shards=1, n_slices=4, budget=1)
    report: dict[str, Any] = {
        "setup": {
            "train_samples": len(train),
            "test_samples": len(test),
            "classes": names,
            "config": config,
            "policy": "approximate_then_exact",
            "approximate_method": "auto",
            "threads": args.threads,
            "load_average_at_start": round(os.getloadavg()[0], 2),
        },
        "scenarios": {},
    }
    with running(Service, "service-passes-") as service:
        model_id = create_auto_model(service, names, config)
        rows = [
            {"external_id": f"agnews-{i:05d}", "label": label, "text": text}
            for i, (text, label) in enumerate(train)
        ]
        service.call("POST", f"/models/{model_id}/samples", {"samples": rows})
        service.call("POST", f"/models/{model_id}/train", expect=202)
        log(f"training {len(train)} samples")
        seconds, statistics_s, _ = service.run_training(JobKind.train)
        report["training_seconds"] = round(seconds, 2)
        report["statistics_seconds_after_training"] = round(statistics_s, 2)
        log(f"trained in {seconds:.1f} s, statistics {statistics_s:.1f} s")

        live = set(range(len(train)))
        rng = random.Random(args.seed)
        cases: list[tuple[str, list[int], int | None]] = []
        for name, share in (("random_1pct", 0.01), ("random_10pct", 0.10)):
            cases.append((name, sorted(rng.sample(sorted(live), round(share * len(train)))), None))
            live -= set(cases[-1][1])
        cases.append(("whole_class", [], 0))
        for name, forget, forgotten_class in cases:
            if name not in args.cases.split(","):
                continue
            if forgotten_class is not None:
                forget = sorted(i for i in live if train_labels[i] == forgotten_class)
            live -= set(forget)
            retain = sorted(live)
            keep_test = (
                np.flatnonzero(test_labels != forgotten_class)
                if forgotten_class is not None
                else np.arange(len(test))
            )
            texts = {
                "forget": [train[i][0] for i in forget],
                "retain": [train[i][0] for i in retain],
                "test": [test[i][0] for i in keep_test],
            }
            labels = {
                "forget": train_labels[forget],
                "retain": train_labels[retain],
                "test": test_labels[keep_test],
            }
            log(f"{name}: deleting {len(forget)}")
            if forgotten_class is None:
                deletion = service.call(
                    "POST",
                    "/deletions",
                    {"model_id": model_id, "sample_ids": [f"agnews-{i:05d}" for i in forget]},
                    expect=202,
                )
            else:
                deletion = service.call(
                    "POST",
                    f"/models/{model_id}/class-deletions",
                    {"label": names[forgotten_class], "path": "approximate"},
                    expect=202,
                )
            # Before the pass: once it serves, housekeeping may collect the statistics.
            chain = LastChain(service)
            pass_s, note = service.run_pass()
            status = service.call("GET", f"/deletions/{deletion['id']}")["status"]
            method = note.split()[1]
            approximate = scores(service, model_id, texts, labels)
            log(f"{name}: {method} in {pass_s:.2f} s ({status})")
            forgotten = [
                TrainingSample(f"agnews-{i:05d}", 0, 0, train[i][0], int(train_labels[i]))
                for i in forget
            ]
            _, from_data_s = chain.run(method, forgotten, from_data=True)
            # The untouched chain: what serving the invalidated layers again would score.
            candidates = {
                "none (the chain as trained)": (chain.scores(chain.stages, texts, labels), 0.0)
            }
            for candidate in args.candidates:
                if registry.get(candidate).forgets != "samples" and forgotten_class is None:
                    continue
                edited, seconds = chain.run(candidate, forgotten, from_data=False)
                candidates[candidate] = (chain.scores(edited, texts, labels), seconds)
            retrain_s, statistics_s, jobs = service.run_training(JobKind.retrain)
            done = service.call("GET", f"/deletions/{deletion['id']}")["status"]
            if done != "completed":
                raise SystemExit(f"{name}: the deletion is {done} after its retrains")
            exact = scores(service, model_id, texts, labels)
            gap = avg_gap(approximate, exact)
            measured = {
                name: {
                    **{k: round(v, 2) for k, v in result.as_dict().items()},
                    "seconds": round(seconds, 3),
                    "ratio": round(seconds / retrain_s, 4),
                    "avg_gap": round(avg_gap(result, exact), 2),
                }
                for name, (result, seconds) in candidates.items()
            }
            log(f"{name}: retrain {retrain_s:.1f} s, gap {gap:.2f}")
            report["scenarios"][name] = {
                "forget": len(forget),
                "retain": len(retain),
                "method": method,
                "job_note": note,
                "status_after_pass": status,
                "pass_seconds": round(pass_s, 3),
                "retrain_seconds": round(retrain_s, 2),
                "retrain_jobs": jobs,
                "ratio": round(pass_s / retrain_s, 4),
                "pass_from_data_seconds": round(from_data_s, 2),
                "ratio_from_data": round(from_data_s / retrain_s, 4),
                "statistics_seconds_after_retrain": round(statistics_s, 2),
                "approximate": {k: round(v, 2) for k, v in approximate.as_dict().items()},
                "retrain": {k: round(v, 2) for k, v in exact.as_dict().items()},
                "avg_gap": round(gap, 2),
                "ta_for_the_gap": (
                    "test samples of the remaining classes"
                    if forgotten_class is not None
                    else "all test samples"
                ),
                "meets_targets": pass_s / retrain_s <= 0.05 and gap <= 5.0,
                "candidates_on_the_same_chain": measured,
            }
    report["setup"]["load_average_at_end"] = round(os.getloadavg()[0], 2)
    report["targets"] = {"ratio_at_most": 0.05, "avg_gap_at_most": 5.0}
    return report


def write_report(report: dict[str, Any], output: Path) -> None:
    """Write the report to ``output`` and print it."""
    text = json.dumps(report, indent=2)
    output.write_text(text + "\n", encoding="utf-8")
    print(text)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    write_report(run(args), args.output)


if __name__ == "__main__":
    main()
