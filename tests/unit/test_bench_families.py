"""A smoke run of bench/families.py: a tiny text family and a tiny image family, library and
service, on a few samples: every figure the issue asks of an entry present and sane."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "families.py"

pytestmark = pytest.mark.slow  # trains two families and starts the app: `make test`, not `check`


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_families", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _numbers(report: Any) -> list[float]:
    if isinstance(report, dict):
        return [x for value in report.values() for x in _numbers(value)]
    if isinstance(report, list):
        return [x for value in report for x in _numbers(value)]
    if isinstance(report, int | float) and not isinstance(report, bool):
        return [float(report)]
    return []


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    bench = _bench()
    output = tmp_path_factory.mktemp("families") / "report.json"
    args = bench.parse_args(
        [
            "--quick",
            "--no-minilm",
            "--families=distilbert,vit",
            "--train=40",
            "--test=12",
            "--service-samples=24",
            "--service-deletions=3",
            f"--output={output}",
        ]
    )
    report: dict[str, Any] = bench.run(args)
    return report, output


def test_every_family_has_the_issues_figures(run: tuple[dict[str, Any], Path]) -> None:
    report, output = run
    assert report["complete"] and report["all_bitwise_exact"]
    assert json.loads(output.read_text())["families"] == report["families"]
    assert [(e["family"], e["modality"]) for e in report["families"]] == [
        ("distilbert", "text"),
        ("vit", "image"),
    ]
    for entry in report["families"]:
        assert entry["bitwise_exact"] is True, entry
        exactness = entry["exactness"]
        assert exactness["stages_equal"] == exactness["stages_compared"] > 0
        assert exactness["stages_changed_by_the_deletion"] > 0
        for key in ("accuracy_s3t", "accuracy_full_lora"):
            assert 0 <= entry[key] <= 1
        assert entry["retrain_share_1pct"] > 0 and entry["training_s_per_1000"] > 0
        assert entry["retrain_1pct"]["deleted"] == 1  # 1 % of 40, at least one
        assert "tiny random-weight" in entry["base"]
        assert entry["deletion_202"]["p99_ms"] > 0 and entry["deletion_202"]["deletions"] == 3
        clean = entry["deletion_to_clean_prediction_ms"]
        assert clean["p99_ms"] >= clean["p50_ms"] > 0
        assert math.isfinite(sum(_numbers(entry)))
    vit = report["families"][1]
    assert "digits" in vit["data"]
    assert vit["service"]["via"] == "api" and vit["service"]["base_model"] == "tiny-vit"
    assert "AG News" in report["families"][0]["data"]


@pytest.mark.parametrize(("index", "base_model"), [(0, "tiny-distilbert"), (1, "tiny-vit")])
def test_each_family_is_measured_through_the_api(
    run: tuple[dict[str, Any], Path], index: int, base_model: str
) -> None:
    entry = run[0]["families"][index]
    service = entry["service"]
    assert service["via"] == "api" and service["base_model"] == base_model
    assert entry["deletion_202"] == service["deletion_202"]
    assert service["deletion_to_clean_prediction"]["deletions"] == 3  # every one came clean
    assert entry["deletion_to_clean_prediction_ms"]["p99_ms"] >= entry["deletion_202"]["p50_ms"]
    assert service["probes_that_used_an_invalidated_layer"] == 0
    assert service["deletions_never_clean"] == 0
