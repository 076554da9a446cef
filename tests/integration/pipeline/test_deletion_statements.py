"""The 202 of `POST /deletions` stays one lean transaction: statements per case, held to a
budget (``bench/deletion_statements.py`` counts them, from authentication to the answer)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from tests.conftest import FreshDatabase

BENCH = Path(__file__).resolve().parents[3] / "bench" / "deletion_statements.py"
#: Measured on PostgreSQL 25 / 23-25 / 24 / 15 / 15 / 7, on SQLite 25 / 23 / 27 / 14 / 14 / 8
#: (6 runs each; which orders a deletion parks depends on the placement; the webhook endpoints
#: are read once per transaction); before the lean transaction 42 / 32-34 / 41 / 23 / 23 / 5.
#: Since each audit entry also writes its `audit_refs` row (a certificate finds its entries by
#: that index, so its read no longer grows with the chain: bench/results-audit-reads.json), a
#: case writes one statement more per audit entry: measured on PostgreSQL 26 / 24-25 / 26 / 17 /
#: 17 / 7, on SQLite 26 / 24 / 28 / 16 / 16 / 8.
BUDGET = {
    "first_on_shard": 27,
    "joins_queued_retrain": 27,
    "subject": 29,
    "already_deleted": 17,
    "unknown": 17,
    "replay": 8,
}


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deletion_statements", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_each_case_stays_within_its_statement_budget(
    fresh_db: FreshDatabase, tmp_path: Path
) -> None:
    counts = _bench().count_statements(fresh_db.url(), tmp_path)
    assert set(counts) == set(BUDGET)
    over = {case: n for case, n in counts.items() if n > BUDGET[case]}
    assert not over, f"over budget: {over} (all: {counts})"
