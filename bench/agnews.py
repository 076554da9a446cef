"""The AG News files the benches read (``../shared/data/agnews``, or ``$BENCH_DATA_DIR/agnews``):
a seeded, shuffled subset of a split."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("BENCH_DATA_DIR", ROOT.parent / "shared" / "data")) / "agnews"
Rows = list[tuple[str, str]]  # (text, label name)


def load_split(path: Path, limit: int, seed: int) -> Rows:
    """The first ``limit`` rows of a split's TSV (text, label) after a seeded shuffle."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [
            (r[0], r[1])
            for r in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            if len(r) == 2
        ]
    random.Random(seed).shuffle(rows)
    return rows[:limit]
