"""Audit reads against the length of the chain; prints one JSON object.

Runs the app in this process on a fresh database per size and backend. A tiny model gets a real
history through the API (created, samples registered, one deletion), then its chain is grown in
bulk to ``size`` entries (real links: each filler entry hashes its content and the previous hash,
inserted in batches), then one more deletion through the API (so there is an old and a new
certificate). The full verification (``POST /models/{id}/audit/verify``, what housekeeping runs
once a day) sets the checkpoint; then each timed read follows one new entry, as in a live
service:

- ``audit_page``: ``GET /models/{id}/audit`` (the first page, 100 entries);
- ``certificate_old`` / ``certificate_new``: ``GET /deletions/{id}/certificate`` of the deletion
  at the start of the chain and of the one at its end;
- ``dashboard_audit``: the dashboard's audit panel (``?part=audit``, polled by the page).

``ratio_100k_to_1k`` is each read's p50 at the largest size over its p50 at the smallest (the
target is at most 2). ``baseline`` is today's (before checkpoints) read in the same run: the same
page query and a full re-hash of the chain per read (``AuditRepository.verify``), and for a
certificate the scan of every entry of the chain plus that re-hash.

Usage: ``python bench/audit_reads.py [--backend sqlite|postgresql|both] [--sizes 1000,100000]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from timing import summary_ms  # noqa: E402

from service.app import create_app  # noqa: E402
from service.db.engine import make_engine, make_session_factory, unit_of_work  # noqa: E402
from service.db.models import AuditEntry, Role  # noqa: E402
from service.db.models.base import utcnow  # noqa: E402
from service.db.repositories import AuditRepository  # noqa: E402
from service.db.repositories.audit import audit_chain, entry_hash  # noqa: E402
from service.settings import Settings  # noqa: E402
from tests.conftest import FreshDatabase  # noqa: E402
from tests.integration.api import TINY_MODEL, Api, issue_keys, samples  # noqa: E402

BATCH = 5000
READS = ("audit_page", "certificate_old", "certificate_new", "dashboard_audit")


def grow(factory: Any, chain: str, size: int) -> float:
    """Append filler entries to ``chain`` until it holds ``size``, in bulk; returns seconds."""
    started = time.perf_counter()
    with unit_of_work(factory) as session:
        last = session.execute(
            sa.select(AuditEntry.seq, AuditEntry.hash)
            .where(AuditEntry.chain == chain)
            .order_by(AuditEntry.seq.desc())
            .limit(1)
        ).one()
    seq, prev = last[0], last[1]
    while seq < size:
        rows = []
        for _ in range(min(BATCH, size - seq)):
            seq += 1
            entry = AuditEntry(
                chain=chain,
                seq=seq,
                at=utcnow(),
                actor="system",
                action="bench.filler",
                payload={"n": seq},
                prev_hash=prev,
            )
            prev = entry_hash(entry)
            rows.append(
                {
                    "chain": chain,
                    "seq": seq,
                    "at": entry.at,
                    "actor": entry.actor,
                    "action": entry.action,
                    "payload": entry.payload,
                    "prev_hash": entry.prev_hash,
                    "hash": prev,
                }
            )
        with unit_of_work(factory) as session:
            session.execute(sa.insert(AuditEntry), rows)
    return time.perf_counter() - started


def timed(call: Callable[[], Any], n: int, before: Callable[[], None] | None = None) -> list[float]:
    times = []
    for _ in range(n):
        if before is not None:
            before()
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def measure_size(backend_db: FreshDatabase, tmp: Path, size: int, reads: int) -> dict[str, Any]:
    url = backend_db.url()
    settings = Settings(
        data_dir=tmp, database_url=url, api_housekeeping=False, relay_interval_s=3600
    )
    app_key = issue_keys(settings)["a"]
    admin_key = issue_keys(settings, Role.admin)["a"]
    engine = make_engine(url)
    factory = make_session_factory(engine)
    result: dict[str, Any] = {"entries": size}
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            api, admin = Api(client, app_key), Api(client, admin_key)
            model_id = api.ok(api.post("/models", TINY_MODEL), 201)["id"]
            api.ok(api.post(f"/models/{model_id}/samples", {"samples": samples(8)}))
            old = api.ok(api.delete(model_id, sample_ids=["s000"]), 202)["id"]
            chain = audit_chain(uuid.UUID(model_id))
            # The second deletion writes 2 entries: the chain then holds ``size``.
            result["bulk_insert_s"] = round(grow(factory, chain, size - 2), 2)
            new = api.ok(api.delete(model_id, sample_ids=["s001"]), 202)["id"]
            with unit_of_work(factory) as session:
                result["entries"] = session.scalar(
                    sa.select(sa.func.count()).where(AuditEntry.chain == chain)
                )

            started = time.perf_counter()
            full = admin.ok(admin.post(f"/models/{model_id}/audit/verify"))
            result["full_verification_ms"] = round((time.perf_counter() - started) * 1000, 1)
            assert full["ok"], full
            assert full["verified_through_seq"] == result["entries"], full

            def one_more() -> None:  # activity between reads: a read verifies what is new
                with unit_of_work(factory) as session:
                    AuditRepository.from_session(session).append(
                        chain, actor="system", action="bench.tick", payload={}
                    )

            def get(path: str, as_: Api = api) -> Any:
                response = as_.get(path)
                assert response.status_code == 200, response.text
                return response

            def page() -> None:
                body = get(f"/models/{model_id}/audit?limit=100").json()
                assert body["verification"]["ok"], body["verification"]
                assert len(body["entries"]) == 100

            def certificate(deletion_id: str) -> Callable[[], None]:
                def read() -> None:
                    assert get(f"/deletions/{deletion_id}/certificate").json()[
                        "audit_chain_verified"
                    ]

                return read

            def panel() -> None:
                assert (
                    'data-audit-verified="true"'
                    in get(f"/dashboard/models/{model_id}?part=audit", admin).text
                )

            calls = {
                "audit_page": page,
                "certificate_old": certificate(old),
                "certificate_new": certificate(new),
                "dashboard_audit": panel,
            }
            for name, call in calls.items():
                call()  # warm: imports, caches, the first page of each query plan
                result[name] = summary_ms(timed(call, reads, before=one_more))

        # Today's code, in the same run: the same page query, and the full re-hash per read.
        with unit_of_work(factory) as session:
            audit = AuditRepository.from_session(session)

            def old_page() -> None:
                audit.entries(chain, after_seq=0, limit=101)
                assert audit.verify(chain).ok

            def old_certificate() -> None:
                wanted = {old}
                [e for e in audit.entries(chain) if e.payload.get("deletion_id") in wanted]
                assert audit.verify(chain).ok

            baseline_reads = max(3, reads // 10)
            result["baseline"] = {
                "audit_page": summary_ms(timed(old_page, baseline_reads)),
                "certificate_old": summary_ms(timed(old_certificate, baseline_reads)),
                "reads": baseline_reads,
            }
    finally:
        engine.dispose()
    return result


def ratios(small: dict[str, Any], large: dict[str, Any]) -> dict[str, float]:
    return {
        name: round(large[name]["p50_ms"] / small[name]["p50_ms"], 2)
        for name in READS
        if name in small and name in large
    }


def measure(backend: str, sizes: list[int], reads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        databases = FreshDatabase(backend, Path(tmp))
        try:
            by_size = {}
            for size in sizes:
                print(f"{backend}: {size} entries", file=sys.stderr)
                by_size[str(size)] = measure_size(databases, Path(tmp) / str(size), size, reads)
        finally:
            databases.close()
    small, large = by_size[str(sizes[0])], by_size[str(sizes[-1])]
    reads_ratio = ratios(small, large)
    baseline_ratio = ratios(small["baseline"], large["baseline"])
    return {
        "sizes": by_size,
        "ratio_100k_to_1k": max(reads_ratio.values()),
        "ratio_100k_to_1k_per_read": reads_ratio,
        "baseline_ratio_100k_to_1k": max(baseline_ratio.values()),
        "baseline_ratio_100k_to_1k_per_read": baseline_ratio,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("postgresql", "sqlite", "both"), default="both")
    parser.add_argument("--sizes", default="1000,100000", help="Chain lengths, smallest first.")
    parser.add_argument("--reads", type=int, default=40, help="Timed reads of each kind.")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    result: dict[str, Any] = {
        "bench": "audit_reads",
        "reads": list(READS),
        "timed_reads": args.reads,
        "note": "each timed read follows one new entry; p50 ratios; the baseline re-hashes "
        "the whole chain per read as the code before checkpoints did",
    }
    for backend in backends:
        result[backend] = measure(backend, sizes, args.reads)
    result["ratio_100k_to_1k"] = max(result[b]["ratio_100k_to_1k"] for b in backends)
    result["baseline_ratio_100k_to_1k"] = min(
        result[b]["baseline_ratio_100k_to_1k"] for b in backends
    )
    result["target_met"] = result["ratio_100k_to_1k"] <= 2
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
