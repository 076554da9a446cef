"""A smoke run of bench/graded_passes.py on a tiny random-weight backbone and synthetic texts:
the service, its runners and its measurements as the bench drives them, and the figures it
derives from them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from service.engine import artifact_store
from service.settings import Settings
from tests.bench_scripts import load_bench
from tests.tiny_models import tiny_backbone
from unlearning.s3t import S3TEngine

CLASSES = {"Business": ("stocks", "market"), "Sports": ("match", "goal")}
pytestmark = pytest.mark.slow  # a whole (tiny) service run: `make test` runs it, `make check` not


def _write(path: Path, n: int, offset: int) -> None:
    names = sorted(CLASSES)
    lines = []
    for i in range(offset, offset + n):
        name = names[i % 2]
        lines.append(f"{CLASSES[name][i % 2]} news number {i}\t{name}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = tmp_path_factory.mktemp("agnews")
    _write(data / "train.tsv", 48, 0)
    _write(data / "test.tsv", 12, 1000)
    bench = load_bench("graded_passes.py")
    passes = sys.modules["service_passes"]  # the module the bench reuses, on its own path

    def tiny_engine(settings: Settings) -> S3TEngine:
        return S3TEngine(tiny_backbone(4), artifact_store(settings))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(passes, "build_engine", tiny_engine)
        args = bench.parse_args(
            [
                *("--data", str(data), "--train=48", "--eval=12", "--deletions=2"),
                *("--max-length=16", "--share=0.05", "--output", str(data / "out.json")),
            ]
        )
        result: dict[str, Any] = bench.run(args)
    return result


def test_every_deletion_is_measured_in_each_phase_and_its_pass_graded(
    report: dict[str, Any],
) -> None:
    phases = [(p["deletion"], p["phase"]) for p in report["accuracy_over_time"]]
    # No measurement while a pass is pending: the pass's own stands for the deactivation's.
    restored = [(2, "restored")] if report["restore_jobs"] else []
    assert (
        phases
        == [(0, "trained")]
        + [(i, phase) for i in (1, 2) for phase in ("approximated", "retrained")]
        + restored
    )
    generations = [p["serving_generation"] for p in report["accuracy_over_time"]]
    assert generations == sorted(set(generations))  # each phase a new serving generation
    assert all(0 <= p["accuracy"] <= 100 for p in report["accuracy_over_time"])
    assert report["auto_choices"] == [p["method"] for p in report["passes"]]
    assert len(report["passes"]) == 2
    for row in report["passes"]:
        assert row["reason"].startswith("auto: ") and row["pass_status"] == "succeeded"
        assert row["grade"] is not None and row["grade"]["with_deleted"] is False
        assert row["retrain_seconds"] > 0 and row["retrain_jobs"] >= 1
    (record,) = report["methods"]
    assert (record["method"], record["grades"]) == (report["auto_choices"][0], 2)


def test_the_cost_share_is_every_measurement_over_the_streams_retrains(
    report: dict[str, Any],
) -> None:
    measured = sum(p["measured_seconds"] for p in report["accuracy_over_time"])
    assert report["measurement_seconds_total"] == pytest.approx(measured, abs=0.02)
    retrains = sum(p["retrain_seconds"] for p in report["passes"]) + report["restore_seconds"]
    assert report["retrain_seconds_total"] == pytest.approx(retrains, abs=0.02)
    m, r = report["measurement_seconds_total"], report["retrain_seconds_total"]  # rounded
    assert (m - 0.005) / (r + 0.005) <= report["grading_cost_share"] <= (m + 0.005) / (r - 0.005)
