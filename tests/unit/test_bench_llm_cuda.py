"""bench/gpu/llm_cuda.py up to its CUDA calls: the whole script on the CPU with tiny sizes, every
figure present (on the GPU machine it runs with `--device cuda`, from bench/gpu/evidence.sh)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gpu" / "llm_cuda.py"

pytestmark = pytest.mark.slow  # trains a decoder three times over: `make test`, not `check`


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_llm_cuda", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_cpu_dry_run_reports_every_figure() -> None:
    bench = _bench()
    args = bench.parse_args(
        ["--device=cpu", "--quick", "--samples=16", "--precisions=bfloat16,int8", "--compare-cpu"]
    )
    report: dict[str, Any] = bench.run(args)
    half = report["precisions"]["bfloat16"]
    assert half["bitwise_exact"] is True and half["checkpointing_equal"] is True
    assert half["compute_profile"].endswith("-bf16") and half["stages_retrained"] > 0
    for concurrency in (1, 8):
        figures = half["generation"][f"concurrent_{concurrency}"]
        assert figures["tokens"] == 4 * concurrency and figures["tokens_per_s"] > 0
    if not report["int8"]["available"]:
        assert "needs bitsandbytes" in report["precisions"]["int8"]["skipped"]
    assert report["bitwise_exact"] is True
    assert report["cpu"]["float32"]["train_s"] > 0
    assert "bfloat16" not in report["cpu_over_device_training_time"]  # no CPU bf16 asked
