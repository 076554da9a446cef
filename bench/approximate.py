"""Approximate unlearning (SSD, IAU, FT, GA, RL, ...) against the exact S3T retrain on AG News.

Prints one JSON object (progress goes to stderr) and writes it to ``--output``. One shard's worth
of training data trains ONE S3T slice sequence (growing prefixes of its slices, one LoRA block per
stage) on the real MiniLM-L6 backbone. Three forgetting scenarios are run on that model: random
1 % of the shard's samples, random 10 %, and every sample of one class. For each, in the same run:

- ``retrain``: the exact S3T retrain of the sequence without the forget set, from the first
  stage whose slice holds a forget sample; its wall time is the reference;
- ``original``: the trained model, untouched;
- one row per method of ``unlearning.approx.registry`` that fits the task (by its registered
  name: ``ssd``, ``iau``, ``finetune``, ``gradient_ascent``, ``random_labels``, ...), run
  through the registry on the original trained prefix with the stages from the first affected
  one editable, with the method's default settings (the 10-epoch methods can cost more than the
  retrain); methods that forget classes (``concept_poisoning``, ``suppress_class``,
  ``refit_head``) only in the whole-class scenario. A row may also be a config variant,
  ``name:setting=value[:setting=value...]``, e.g. ``rbm:variant=masked_finetune`` (RBM's variant
  A, run by default next to the library default B; the earlier reports call them ``rbm_a`` and
  ``rbm_b``, and FT, GA, RL, ``prune`` and ``concepts`` the methods now named by the registry).

``--task regression`` learns a number instead: the AG News class code (sorted names), centred,
plus seeded N(0, 0.25^2) noise; its rows are the methods that fit regression, scored with the
regression metrics (UA, RA, TA are mean absolute errors; MIA on -|error|), and the report goes to
``results-approximate-regression.json``.

Each row has UA, RA, TA and MIA efficacy (``unlearning.evaluation``), its Avg. Gap to
``retrain``, its wall time and its time ratio to ``retrain``. SSD's full-data importance and
IAU's full-data gradient depend only on the trained prefix, so they are computed once right after
training (``cache_seconds``: the prefix's pass statistics, as the service stores them, which
every method that reads statistics reuses) and every deletion reuses them: ``time_ratio`` is a
pass with the cache, ``time_ratio_with_cache`` adds the one-off cache. For the whole class, TA
(used for the gap) is on the test samples of the remaining classes; ``TA_all`` is on the whole
test set.

``--gradient-penalty 0.005`` (IAU's value) trains the model, and its exact retrains, with IAU's
gradient-norm penalty instead; with ``--methods ssd,iau`` that run shows the penalty's effect on
IAU (it writes ``results-approximate-penalty.json``). Everything is seeded: a second run gives
the same metrics.

Usage: python bench/approximate.py [--shard 1000 --test 800 ...]; see --help. With every method,
``--shard 200 --test 200 --max-length 32`` took about 29 min on a shared 2-core machine (one torch
thread), the regression run with ``--epochs 2`` at that scale about 25 min; the 1000-sample
default would take over an hour. ``--quick`` (300 / 200 samples) is no longer a 3-minute smoke run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearning.approx import Examples, PrefixModel, registry
from unlearning.approx.laf import LAFResult
from unlearning.approx.registry import MethodConfigError, MethodSpec, PassData
from unlearning.approx.ssd import SSDResult
from unlearning.approx.statistics import PassStatistics, data_statistics
from unlearning.artifacts import LocalArtifactStore
from unlearning.evaluation import (
    UnlearningScores,
    accuracy,
    avg_gap,
    evaluate_classifier,
    evaluate_regressor,
)
from unlearning.families import Modality
from unlearning.s3t import (
    Backbone,
    ModelSpec,
    S3TConfig,
    S3TEngine,
    SequenceKey,
    TrainingSample,
    load_backbone,
)
from unlearning.s3t.backbone import Encoded
from unlearning.s3t.config import Task
from unlearning.s3t.weights import StageWeights
from unlearning.sharding import assign

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # agnews, also when a test loads this file by its path
from agnews import DEFAULT_DATA, Rows, load_split  # noqa: E402

DEFAULT_OUTPUT = ROOT / "bench" / "results-approximate.json"
PENALTY_OUTPUT = ROOT / "bench" / "results-approximate-penalty.json"
REGRESSION_OUTPUT = ROOT / "bench" / "results-approximate-regression.json"
MODEL_KEY = "bench-approximate"
#: The bench's data are texts (AG News, or its offline stand-in) on a text encoder.
TEXT = Modality.TEXT
#: Config variants run by default next to every registered method that fits the task.
VARIANTS = ("rbm:variant=masked_finetune",)


def task_methods(task: Task) -> tuple[str, ...]:
    """The default rows of a task: every registered method that fits it, then the variants."""
    names = tuple(spec.name for spec in registry.specs() if spec.unfit(task, TEXT) is None)
    return (*names, *(v for v in VARIANTS if v.split(":")[0] in names))


#: The default rows, in report order, of classification and of regression.
APPROXIMATE = task_methods(Task.CLASSIFICATION)
REGRESSION_METHODS = task_methods(Task.REGRESSION)
#: Methods that only make sense when a whole class is forgotten.
WHOLE_CLASS_ONLY = frozenset(s.name for s in registry.specs() if s.forgets != "samples")


@dataclass(frozen=True)
class Arm:
    """One row: a registered method with its config (its defaults, or a variant's)."""

    label: str
    spec: MethodSpec[Any]
    config: Any


def parse_arm(text: str, task: Task) -> Arm:
    """``name`` or ``name:setting=value[:...]`` (values as JSON, else strings) as an arm;
    ValueError when the method is unknown, does not fit the task or refuses the settings."""
    name, *settings = text.split(":")
    spec = registry.get(name)
    reason = spec.unfit(task, TEXT)
    if reason is not None:
        raise ValueError(reason)
    overrides: dict[str, Any] = {}
    for setting in settings:
        key, sep, raw = setting.partition("=")
        if not sep:
            raise ValueError(f"{setting!r} is not `setting=value`")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return Arm(text, spec, spec.configure(overrides))


#: Noise (standard deviation, in class-code units) on the regression target.
REGRESSION_NOISE = 0.25
#: The issue's target for SSD and IAU: at most this share of the retrain's time ...
TARGET_TIME_RATIO = 0.05
#: ... with an Avg. Gap to the retrain under this many points.
TARGET_GAP = 5.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of train/test.tsv")
    parser.add_argument(
        "--task",
        choices=[str(t) for t in Task],
        default=str(Task.CLASSIFICATION),
        help="classification of the AG News topic, or regression on the topic's centred class "
        f"code (0..3 in sorted name order, minus 1.5) plus seeded N(0, {REGRESSION_NOISE}^2) "
        "noise",
    )
    parser.add_argument("--shard", type=int, default=1000, help="training samples (one shard)")
    parser.add_argument("--test", type=int, default=800, help="test samples")
    parser.add_argument("--slices", type=int, default=4, help="slices = stages of the sequence")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per stage")
    parser.add_argument("--lr", type=float, default=2e-3, help="S3T learning rate")
    parser.add_argument("--batch-size", type=int, default=16, help="S3T batch size")
    parser.add_argument("--max-length", type=int, default=64, help="tokens per text")
    parser.add_argument(
        "--gradient-penalty",
        type=float,
        default=0.0,
        help="IAU's training-time gradient-norm penalty for the model and its retrains "
        "(IAU's code uses 0.005)",
    )
    parser.add_argument(
        "--methods",
        default=None,
        help="approximate methods to run, comma-separated: names of unlearning.approx.registry "
        f"that fit the task, or config variants `name:setting=value`; default: "
        f"{','.join(APPROXIMATE)} (classification) or {','.join(REGRESSION_METHODS)} "
        "(regression)",
    )
    parser.add_argument(
        "--forget-class",
        default=None,
        help="the class the whole-class scenario forgets (None: the first in sorted order)",
    )
    parser.add_argument("--eval-batch", type=int, default=64, help="batch size of evaluation")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1, as the service's CPU worker: retrain and passes share a busy "
        "machine fairly; 0: torch's default)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output",
        default=None,
        help=f"where the JSON goes too ('' for nowhere; default {DEFAULT_OUTPUT.name}, or "
        f"{PENALTY_OUTPUT.name} with a gradient penalty)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 300 training and 200 test samples"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.shard, args.test = min(args.shard, 300), min(args.test, 200)
    if args.shard < 100 or args.test < 10:
        parser.error("need at least 100 training samples (1 % is one sample) and 10 test samples")
    task = Task(args.task)
    if args.methods is None:
        args.methods = ",".join(task_methods(task))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or len(set(methods)) < len(methods):
        parser.error("--methods must name some methods, once each")
    try:
        args.arms = [parse_arm(m, task) for m in methods]
    except (ValueError, MethodConfigError) as error:
        parser.error(f"--methods: {error}")
    args.methods = methods
    if args.output is None:
        if args.task == Task.REGRESSION:
            args.output = str(REGRESSION_OUTPUT)
        else:
            args.output = str(PENALTY_OUTPUT if args.gradient_penalty > 0 else DEFAULT_OUTPUT)
    return args


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


class EvalSet:
    """Inputs for evaluation, scored in batches of similar length trimmed to their longest row,
    with the plain backbone's states below the lowest adapter computed once for every model."""

    def __init__(self, backbone: Backbone, encoded: Encoded, depth: int, batch_size: int) -> None:
        self.size, self.depth = len(encoded), depth
        lengths = encoded.attention_mask.sum(dim=1)
        order = torch.argsort(lengths, stable=True)
        self.batches: list[tuple[torch.Tensor, Encoded, torch.Tensor]] = []
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            width = int(lengths[index].max())
            rows = Encoded(encoded.inputs[index, :width], encoded.attention_mask[index, :width])
            with torch.no_grad():
                self.batches.append((index, rows, backbone.hidden_at(rows, depth)))

    def logits(self, model: PrefixModel) -> torch.Tensor:
        if model.depth != self.depth:
            raise ValueError("the model's lowest adapter is not where the cached states enter")
        out: torch.Tensor | None = None
        model.eval()
        with torch.no_grad():
            for index, rows, bottom in self.batches:
                result = model(rows, bottom).reshape(len(index), -1)
                if out is None:
                    out = torch.empty(self.size, result.shape[1])
                out[index] = result
        assert out is not None
        return out


@dataclass(frozen=True)
class Scenario:
    name: str
    forget: np.ndarray  # indices into the shard's samples
    test: np.ndarray  # indices of the test samples TA (and the gap) uses
    forgotten_class: int | None = None


@dataclass(frozen=True)
class Problem:
    """The data every arm shares: the shard, the test set and the scenarios."""

    samples: list[TrainingSample]
    labels: np.ndarray  # class indices (the whole-class scenario uses them for either task)
    test_texts: list[str]
    test_labels: np.ndarray
    names: list[str]
    scenarios: list[Scenario]
    targets: np.ndarray  # what the model learns: the labels, or float regression values
    test_targets: np.ndarray

    @property
    def regression(self) -> bool:
        return bool(np.issubdtype(self.targets.dtype, np.floating))


def regression_targets(labels: np.ndarray, n_classes: int, seed: int) -> np.ndarray:
    """The regression task's target: the class code, centred (``code - (n_classes - 1) / 2``,
    so a fresh zero-output head starts near the mean), plus seeded Gaussian noise (float32)."""
    noise = np.random.default_rng(seed).normal(0.0, REGRESSION_NOISE, len(labels))
    return (labels - (n_classes - 1) / 2 + noise).astype(np.float32)


def build_problem(train: Rows, test: Rows, args: argparse.Namespace) -> Problem:
    names = sorted({label for _, label in train})
    index = {name: i for i, name in enumerate(names)}
    labels = np.array([index[label] for _, label in train])
    test_labels = np.array([index[label] for _, label in test])
    targets, test_targets = labels, test_labels
    if args.task == Task.REGRESSION:
        targets = regression_targets(labels, len(names), args.seed + 2)
        test_targets = regression_targets(test_labels, len(names), args.seed + 3)
    samples = []
    for i, (text, _) in enumerate(train):
        sample_id = f"agnews-{i:05d}"
        placement = assign(MODEL_KEY, sample_id, 1, args.slices)
        samples.append(TrainingSample(sample_id, 0, placement.slice, text, float(targets[i])))
    n = len(samples)
    rng = random.Random(args.seed)
    every_test = np.arange(len(test))
    scenarios = [
        Scenario(name, np.array(sorted(rng.sample(range(n), max(1, round(share * n))))), every_test)
        for name, share in (("random_1pct", 0.01), ("random_10pct", 0.10))
    ]
    if args.forget_class is not None and args.forget_class not in index:
        raise SystemExit(f"no class {args.forget_class!r}; the classes are {names}")
    forgotten = index[args.forget_class] if args.forget_class is not None else 0
    scenarios.append(
        Scenario(
            "whole_class",
            np.flatnonzero(labels == forgotten),
            np.flatnonzero(test_labels != forgotten),
            forgotten,
        )
    )
    return Problem(
        samples, labels, [t for t, _ in test], test_labels, names, scenarios, targets, test_targets
    )


def _round(value: float, digits: int = 2) -> float:
    return round(float(value), digits)


class Bench:
    """One trained sequence, its caches, and the scenarios run on it."""

    def __init__(
        self,
        backbone: Backbone,
        problem: Problem,
        config: S3TConfig,
        store: Path,
        eval_batch: int,
    ) -> None:
        self.backbone, self.problem, self.config = backbone, problem, config
        self.engine = S3TEngine(backbone, LocalArtifactStore(store))
        self.spec = ModelSpec.plan(config)
        self.eval_batch = eval_batch
        contents = [s.content for s in problem.samples]
        self.train_encoded = backbone.encode(contents, config.max_length)
        self.test_encoded = backbone.encode(problem.test_texts, config.max_length)
        self.targets = torch.tensor(problem.targets)

    def examples(self, rows: np.ndarray) -> Examples:
        index = torch.from_numpy(rows)
        return Examples(self.train_encoded.rows(index), self.targets[index])

    def prefix(self, stages: Sequence[StageWeights], editable: Sequence[int]) -> PrefixModel:
        return PrefixModel(
            self.backbone, stages, editable=editable, target_modules=self.config.target_modules
        )

    def run(self, arms: Sequence[Arm]) -> dict[str, Any]:
        problem, config = self.problem, self.config
        log(f"training one sequence, gradient penalty {config.gradient_penalty}")
        layers, train_seconds = timed(lambda: self.engine.train(self.spec, problem.samples))
        layers = sorted(layers, key=lambda x: x.stage)
        refs = [layer.artifact for layer in layers]
        stages = [self.engine.load_stage(ref) for ref in refs]
        everything = np.arange(len(problem.samples))

        whole = self.prefix(stages, range(len(stages)))
        data = self.examples(everything)
        statistics: PassStatistics | None = None
        cache_seconds: dict[str, float] = {}
        readers = [arm.label for arm in arms if arm.spec.reads_statistics]
        if readers:
            log(f"cache: the prefix's pass statistics (read by {', '.join(readers)})")
            statistics, seconds = timed(lambda: data_statistics(whole, data))
            cache_seconds = dict.fromkeys(readers, seconds)

        log("evaluation sets (frozen bottom computed once)")
        train_set = EvalSet(self.backbone, self.train_encoded, whole.depth, self.eval_batch)
        test_set = EvalSet(self.backbone, self.test_encoded, whole.depth, self.eval_batch)

        def outputs(model: PrefixModel) -> tuple[torch.Tensor, torch.Tensor]:
            return train_set.logits(model), test_set.logits(model)

        original = outputs(whole)
        scenarios = {}
        for scenario in problem.scenarios:
            scenarios[scenario.name] = self.scenario(
                scenario, refs, stages, original, outputs, arms, statistics
            )
            for name in (arm.label for arm in arms):
                row = scenarios[scenario.name]["methods"].get(name)
                if row is None:
                    continue
                row["cache_seconds"] = _round(cache_seconds[name]) if name in cache_seconds else 0
                retrain = scenarios[scenario.name]["retrain_seconds"]
                row["time_ratio_with_cache"] = _round(
                    (row["seconds"] + row["cache_seconds"]) / retrain, 4
                )
        return {
            "order": list(self.spec.orders[0]),
            "training_seconds": _round(train_seconds),
            "cache_seconds": {k: _round(v) for k, v in cache_seconds.items()},
            "scenarios": scenarios,
        }

    def scenario(
        self,
        scenario: Scenario,
        refs: list[str],
        stages: list[StageWeights],
        original: tuple[torch.Tensor, torch.Tensor],
        outputs: Callable[[PrefixModel], tuple[torch.Tensor, torch.Tensor]],
        arms: Sequence[Arm],
        statistics: PassStatistics | None,
    ) -> dict[str, Any]:
        problem = self.problem
        forget_set = set(scenario.forget.tolist())
        retain_rows = np.array([i for i in range(len(problem.samples)) if i not in forget_set])
        forget, retain = self.examples(scenario.forget), self.examples(retain_rows)
        hit = [(0, problem.samples[i].slice) for i in scenario.forget]
        key = SequenceKey(0, 0)
        first = self.engine.affected_stages(self.spec, hit)[key]
        editable = list(range(first - 1, len(stages)))
        log(
            f"{scenario.name}: forget {len(forget)}, retain {len(retain)}, "
            f"retrain from stage {first}"
        )

        def score(logits: tuple[torch.Tensor, torch.Tensor]) -> tuple[UnlearningScores, float]:
            train_logits, test_logits = logits
            y, y_test = problem.targets, problem.test_targets
            if problem.regression:
                out, out_test = train_logits[:, 0].numpy(), test_logits[:, 0].numpy()
                scores = evaluate_regressor(
                    (out[scenario.forget], y[scenario.forget]),
                    (out[retain_rows], y[retain_rows]),
                    (out_test[scenario.test], y_test[scenario.test]),
                )
                return scores, float(np.abs(out_test - y_test).mean())
            scores = evaluate_classifier(
                (train_logits[scenario.forget].numpy(), y[scenario.forget]),
                (train_logits[retain_rows].numpy(), y[retain_rows]),
                (test_logits[scenario.test].numpy(), y_test[scenario.test]),
            )
            return scores, accuracy(test_logits.numpy(), y_test, name="test")

        remaining = [problem.samples[i] for i in retain_rows]
        new_layers, retrain_seconds = timed(
            lambda: self.engine.retrain(self.spec, key, first, remaining, refs[: first - 1])
        )
        retrained = stages[: first - 1] + [
            self.engine.load_stage(x.artifact) for x in sorted(new_layers, key=lambda x: x.stage)
        ]
        reference, reference_ta_all = score(outputs(self.prefix(retrained, [])))
        rows: dict[str, dict[str, Any]] = {}

        def row(scores: UnlearningScores, ta_all: float, seconds: float) -> dict[str, Any]:
            digits = 4 if problem.regression else 2
            entry: dict[str, Any] = {k: _round(v, digits) for k, v in scores.as_dict().items()}
            if scenario.forgotten_class is not None:
                entry["TA_all"] = _round(ta_all, digits)
            entry["avg_gap"] = _round(avg_gap(scores, reference), digits)
            entry["seconds"] = _round(seconds, 3)
            entry["time_ratio"] = _round(seconds / retrain_seconds, 4)
            return entry

        rows["original"] = row(*score(original), 0.0)
        rows["retrain"] = row(reference, reference_ta_all, retrain_seconds)
        failed: dict[str, str] = {}
        for arm in arms:
            name, spec = arm.label, arm.spec
            if spec.forgets != "samples" and scenario.forgotten_class is None:
                continue
            reads = statistics if spec.reads_statistics else None
            inputs = PassData(forget, None if reads else retain, reads, self.config.n_labels)
            model = self.prefix(stages, editable)
            try:
                result, seconds = timed(lambda: spec.run(model, inputs, arm.config))  # noqa: B023
            except Exception as error:  # one failing method must not lose the others' rows
                log(f"  {name}: failed: {error!r}")
                failed[name] = repr(error)
                continue
            rows[name] = row(*score(outputs(model)), seconds)
            if isinstance(result, SSDResult):
                rows[name]["dampened"] = f"{result.selected}/{result.total}"
            if isinstance(result, LAFResult):
                rows[name]["laf_steps"] = result.steps
            log(f"  {name}: {rows[name]}")
        summary: dict[str, Any] = {
            "forget": len(forget),
            "retain": len(retain),
            "first_affected_stage": first,
            "editable_stages": [i + 1 for i in editable],
            "retrain_seconds": _round(retrain_seconds),
            "ta_for_the_gap": "test samples of the remaining classes"
            if scenario.forgotten_class is not None
            else "all test samples",
            "metric_units": "mean absolute error (UA, RA, TA, TA_all); MIA in percent"
            if problem.regression
            else "percent",
            "methods": rows,
        }
        if failed:
            summary["failed"] = failed
        if scenario.forgotten_class is not None:
            summary["forgotten_class"] = problem.names[scenario.forgotten_class]
        return summary


def targets(scenarios: dict[str, Any]) -> dict[str, Any]:
    """The issue's target per scenario and method: SSD and IAU at most 5 % of the retrain's time
    with an Avg. Gap under 5 points (with the caches built ahead, and counting them)."""
    result: dict[str, Any] = {}
    for scenario, summary in scenarios.items():
        for method in ("ssd", "iau"):
            row = summary["methods"].get(method)
            if row is None:
                continue
            gap_ok = row["avg_gap"] < TARGET_GAP
            result[f"{scenario}/{method}"] = {
                "avg_gap": row["avg_gap"],
                "time_ratio": row["time_ratio"],
                "met": gap_ok and row["time_ratio"] <= TARGET_TIME_RATIO,
                "met_counting_the_cache": gap_ok
                and row["time_ratio_with_cache"] <= TARGET_TIME_RATIO,
            }
    return result


def run(args: argparse.Namespace, backbone: Backbone, train: Rows, test: Rows) -> dict[str, Any]:
    """The whole benchmark on given data and backbone; returns the report."""
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    problem = build_problem(train, test, args)
    task = Task(args.task)
    arms: list[Arm] = list(args.arms)
    base = S3TConfig(
        n_shards=1,
        n_slices=args.slices,
        budget=1,
        task=task,
        n_labels=1 if task == Task.REGRESSION else len(problem.names),
        epochs_per_stage=args.epochs,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=args.seed,
        gradient_penalty=args.gradient_penalty,
    )
    start, load = time.perf_counter(), os.getloadavg()[0]
    threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-approximate-") as tmp:
            bench = Bench(backbone, problem, base, Path(tmp), args.eval_batch)
            result = bench.run(arms)
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    extra: dict[str, Any] = {}
    if problem.regression:
        extra["regression_target"] = (
            f"class code (0..{len(problem.names) - 1} in sorted name order) - "
            f"{(len(problem.names) - 1) / 2} + N(0, {REGRESSION_NOISE}^2)"
        )
        extra["test_mae_of_the_train_mean"] = _round(
            np.abs(problem.test_targets - problem.targets.mean()).mean(), 4
        )
    return {
        "setup": {
            "task": str(task),
            **extra,
            "backbone_layers": backbone.n_layers,
            "train_samples": len(problem.samples),
            "test_samples": len(problem.test_texts),
            "classes": problem.names,
            "slice_sizes": [
                sum(1 for s in problem.samples if s.slice == i) for i in range(args.slices)
            ],
            "config": base.to_dict(),
            "methods": [arm.label for arm in arms],
            "method_settings": {arm.label: arm.spec.settings(arm.config) for arm in arms},
            "threads": used,
            "load_average_at_start": _round(load),
            "load_average_at_end": _round(os.getloadavg()[0]),
            "total_seconds": _round(time.perf_counter() - start, 1),
        },
        **result,
        "targets": targets(result["scenarios"]),
    }


def check_finite(report: Any, path: str = "") -> None:
    """Raise if any number in the report is NaN or infinite."""
    if isinstance(report, dict):
        for key, value in report.items():
            check_finite(value, f"{path}/{key}")
    elif isinstance(report, list):
        for i, value in enumerate(report):
            check_finite(value, f"{path}/{i}")
    elif isinstance(report, float) and not math.isfinite(report):
        raise ValueError(f"non-finite value at {path}")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    train = load_split(args.data / "train.tsv", args.shard, args.seed)
    test = load_split(args.data / "test.tsv", args.test, args.seed + 1)
    report = run(args, load_backbone(), train, test)
    check_finite(report)
    text = json.dumps(report, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
        log(f"wrote {args.output}")
    print(text)


if __name__ == "__main__":
    main()
