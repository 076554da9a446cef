"""A smoke run of bench/approximate.py on a tiny random-weight backbone and synthetic texts."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.tiny_models import tiny_backbone
from unlearning.approx import registry
from unlearning.approx.saliency import RBMConfig
from unlearning.approx.ssd import SSDConfig
from unlearning.families import Modality
from unlearning.s3t.config import Task

BENCH = Path(__file__).resolve().parents[2] / "bench" / "approximate.py"
CLASSES = {
    "Business": ("stocks", "market", "shares", "profit"),
    "Sports": ("match", "goal", "league", "coach"),
    "Sci/Tech": ("chip", "software", "cloud", "robot"),
}


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_approximate", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _rows(n: int, offset: int) -> list[tuple[str, str]]:
    names = sorted(CLASSES)
    rows = []
    for i in range(offset, offset + n):
        name = names[i % len(names)]
        words = CLASSES[name]
        rows.append((f"{words[i % 4]} {words[(i * 3) % 4]} news {i % 7}", name))
    return rows


def _numbers(report: Any) -> list[float]:
    if isinstance(report, dict):
        return [x for value in report.values() for x in _numbers(value)]
    if isinstance(report, list):
        return [x for value in report for x in _numbers(value)]
    if isinstance(report, int | float) and not isinstance(report, bool):
        return [float(report)]
    return []


def _metrics(report: dict[str, Any]) -> dict[str, float]:
    """Every accuracy-like number of every row (no timings)."""
    return {
        f"{scenario}/{method}/{key}": value
        for scenario, summary in report["scenarios"].items()
        for method, row in summary["methods"].items()
        for key, value in row.items()
        if key in {"UA", "RA", "TA", "TA_all", "MIA", "avg_gap"}
    }


pytestmark = pytest.mark.slow  # the bench three times over: `make test` runs it, `make check` not

TINY = [
    "--shard=120",
    "--test=30",
    "--slices=2",
    "--epochs=2",
    "--batch-size=8",
    "--max-length=16",
    "--lr=5e-3",
    "--eval-batch=16",
    "--forget-class=Sports",
    "--output=",
]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return _bench()


def _run(bench: ModuleType, *extra: str) -> dict[str, Any]:
    args = bench.parse_args([*TINY, *extra])
    report: dict[str, Any] = bench.run(args, tiny_backbone(4), _rows(120, 0), _rows(30, 1000))
    return report


@pytest.fixture(scope="module")
def report(bench: ModuleType) -> dict[str, Any]:
    return _run(bench)


def _check(report: dict[str, Any], methods: set[str], whole_class_only: frozenset[str]) -> None:
    assert set(report["setup"]["methods"]) == methods
    assert set(report["scenarios"]) == {"random_1pct", "random_10pct", "whole_class"}
    for name, summary in report["scenarios"].items():
        expected = methods if name == "whole_class" else methods - whole_class_only
        assert set(summary["methods"]) == {"original", "retrain", *expected}, name
        assert summary["retrain_seconds"] > 0
        for method, row in summary["methods"].items():
            for key in ("UA", "RA", "TA", "MIA"):
                assert 0 <= row[key] <= 100, (name, method, key)  # percent, or an error
            assert row["avg_gap"] >= 0 and row["time_ratio"] >= 0
        assert summary["methods"]["retrain"]["avg_gap"] == 0
        assert summary["methods"]["retrain"]["time_ratio"] == 1
        for method in methods & {"ssd", "iau"}:
            row = summary["methods"][method]
            assert row["cache_seconds"] > 0
            assert row["time_ratio_with_cache"] > row["time_ratio"]
    forget = {name: summary["forget"] for name, summary in report["scenarios"].items()}
    assert forget == {"random_1pct": 1, "random_10pct": 12, "whole_class": 40}
    whole = report["scenarios"]["whole_class"]
    assert whole["forgotten_class"] == "Sports"
    assert all("TA_all" in row for row in whole["methods"].values())
    numbers = _numbers(report)
    assert numbers and all(math.isfinite(x) for x in numbers)
    assert set(report["targets"]) == {
        f"{scenario}/{method}" for scenario in forget for method in methods & {"ssd", "iau"}
    }


def test_every_scenario_has_every_method_with_finite_numbers(
    bench: ModuleType, report: dict[str, Any]
) -> None:
    _check(report, set(bench.APPROXIMATE), bench.WHOLE_CLASS_ONLY)
    assert report["setup"]["config"]["gradient_penalty"] == 0
    assert report["setup"]["task"] == "classification"
    fitting = [
        s.name for s in registry.specs() if s.unfit(Task.CLASSIFICATION, Modality.TEXT) is None
    ]
    assert list(bench.APPROXIMATE) == [*fitting, "rbm:variant=masked_finetune"]
    assert {"concept_poisoning", "suppress_class", "refit_head"} == bench.WHOLE_CLASS_ONLY
    settings = report["setup"]["method_settings"]
    assert settings["rbm:variant=masked_finetune"]["variant"] == "masked_finetune"
    assert settings["rbm"]["variant"] == "reset_then_finetune"


def test_the_regression_task_runs_its_methods(bench: ModuleType) -> None:
    report = _run(bench, "--task=regression")
    _check(report, set(bench.REGRESSION_METHODS), bench.WHOLE_CLASS_ONLY)
    assert report["setup"]["task"] == "regression"
    assert report["setup"]["config"]["n_labels"] == 1
    fitting = [s.name for s in registry.specs() if s.unfit(Task.REGRESSION, Modality.TEXT) is None]
    assert list(bench.REGRESSION_METHODS) == [*fitting, "rbm:variant=masked_finetune"]
    assert bench.parse_args(["--task=regression"]).output.endswith("-regression.json")
    with pytest.raises(SystemExit):
        bench.parse_args(["--task=regression", "--methods=random_labels"])


def test_the_penalised_model_runs_the_chosen_methods(bench: ModuleType) -> None:
    report = _run(bench, "--gradient-penalty=0.005", "--methods=ssd,iau")
    _check(report, {"ssd", "iau"}, bench.WHOLE_CLASS_ONLY)
    assert report["setup"]["config"]["gradient_penalty"] == 0.005
    assert bench.parse_args(["--gradient-penalty=0.005"]).output.endswith("-penalty.json")
    with pytest.raises(SystemExit):
        bench.parse_args(["--methods=ssd,nope"])
    for bad in ("rbm:variant=nope", "ssd:alpha", "ssd:nope=1", "ssd,ssd"):
        with pytest.raises(SystemExit):
            bench.parse_args([f"--methods={bad}"])
    arms = bench.parse_args(["--methods=ssd:alpha=2:dampening=0.5,rbm:share=0.25:loss=retain"])
    assert [arm.config for arm in arms.arms] == [
        SSDConfig(alpha=2.0, dampening=0.5),
        RBMConfig(share=0.25, loss="retain"),
    ]


def test_a_second_run_gives_the_same_metrics(bench: ModuleType, report: dict[str, Any]) -> None:
    first = _metrics(report)
    assert first and _metrics(_run(bench)) == first
