"""Subject placement by hash, balanced subject placement and sample placement on the same data.

Prints one JSON object (progress goes to stderr) and writes it to ``--output``. The issue's
setting: 1,000 AG News rows in 20 data subjects on 4 shards of 3 slices. Subjects have skewed,
seeded sizes and arrive in batches (5 registrations of 4 subjects), as they would through
``POST /models/{id}/samples``. Three placements of the same rows:

- ``subject_hash``: a subject's slice by a keyed hash of the subject (the rule before issue 33);
- ``subject_balanced``: a new subject on the least-loaded slice
  (:func:`unlearning.sharding.place_subjects`, what registration does now), checked against its
  bound: no slice above the mean plus the largest subject;
- ``sample``: every row by its own id.

For each: slice sizes (min, max, mean, empty slices, the largest over the mean), the samples a
subject's deletion retrains (mean over subjects: one sequence per touched shard, from the first
stage holding the subject), and the test accuracy of the ensemble trained with the library
(:class:`S3TEngine`, the real MiniLM-L6) on a held-out set. A shard left without samples trains
nothing and is not served (its untrained head would only add noise).

Usage: python bench/placement.py [--train 1000 --test 600 ...]; see --help. About 5 minutes on
one torch thread of a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from unlearning.artifacts import LocalArtifactStore
from unlearning.device import make_deterministic
from unlearning.s3t import ModelSpec, S3TConfig, S3TEngine, TrainingSample, load_backbone
from unlearning.sharding import Placement, assign, place, place_subjects

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # agnews, also when a test loads this file by its path
from agnews import DEFAULT_DATA, load_split  # noqa: E402

DEFAULT_OUTPUT = ROOT / "bench" / "results-placement.json"
MODEL_KEY = "bench-placement"
Row = tuple[str, str, int]  # (sample id, text, label)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def subjects_of(n_rows: int, n_subjects: int, seed: int) -> list[str]:
    """Each row's subject: seeded, skewed sizes (weights uniform in [0, 1)), every subject
    holding at least one row."""
    rng = random.Random(seed)
    weights = [rng.random() for _ in range(n_subjects)]
    names = [f"subject-{i:02d}" for i in range(n_subjects)]
    owners = names + rng.choices(names, weights, k=n_rows - n_subjects)
    rng.shuffle(owners)
    return owners


def placements(
    ids: Sequence[str], owners: Sequence[str], shards: int, slices: int, batches: int
) -> dict[str, dict[str, Placement]]:
    """Each row's placement under the three rules; subjects arrive in ``batches``."""
    pairs = list(zip(ids, owners, strict=True))
    hashed = {i: place(MODEL_KEY, i, s, shards, slices, "subject") for i, s in pairs}
    by_sample = {i: assign(MODEL_KEY, i, shards, slices) for i in ids}
    order = sorted(set(owners))
    sizes = {s: owners.count(s) for s in order}
    loads = [[0] * slices for _ in range(shards)]
    where: dict[str, Placement] = {}
    step = -(-len(order) // batches)
    for first in range(0, len(order), step):
        batch = {s: sizes[s] for s in order[first : first + step]}
        chosen = place_subjects(MODEL_KEY, batch, loads, shards, slices)
        for subject, size in batch.items():
            loads[chosen[subject].shard][chosen[subject].slice] += size
        where.update(chosen)
    balanced = {i: where[s] for i, s in pairs}
    return {"subject_hash": hashed, "subject_balanced": balanced, "sample": by_sample}


def slice_report(
    placed: dict[str, Placement], members: dict[str, list[str]], spec: ModelSpec
) -> dict[str, Any]:
    """Slice sizes, the bound, and what a subject's deletion costs under one placement."""
    cfg = spec.config
    sizes = [[0] * cfg.n_slices for _ in range(cfg.n_shards)]
    for where in placed.values():
        sizes[where.shard][where.slice] += 1
    flat = [size for row in sizes for size in row]
    mean = sum(flat) / len(flat)
    largest = max(len(ids) for ids in members.values())
    # A subject's deletion: each touched shard retrains its served sequence (the first order)
    # from the first stage holding the subject; the samples those stages train on.
    order = spec.orders[0]
    cost = []
    shards_touched = []
    for ids in members.values():
        touched: dict[int, set[int]] = {}
        for i in ids:
            touched.setdefault(placed[i].shard, set()).add(placed[i].slice)
        total = 0
        for shard, hit in touched.items():
            first = min(order.index(s) for s in hit)
            for stage in range(first + 1, cfg.n_slices + 1):
                total += sum(sizes[shard][s] for s in order[:stage])
        cost.append(total)
        shards_touched.append(len(touched))
    return {
        "sizes": sizes,
        "min": min(flat),
        "max": max(flat),
        "mean": round(mean, 2),
        "empty_slices": sum(size == 0 for size in flat),
        "max_over_mean": round(max(flat) / mean, 3),
        "within_bound_mean_plus_largest_subject": max(flat) <= mean + largest,
        "largest_subject": largest,
        "subject_deletion_retrain_samples_mean": round(sum(cost) / len(cost), 1),
        "shards_touched_by_a_subject_mean": round(sum(shards_touched) / len(members), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--train", type=int, default=1000, help="training rows")
    parser.add_argument("--test", type=int, default=600, help="held-out rows")
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--batches", type=int, default=5, help="registrations of subjects")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    make_deterministic()
    torch.manual_seed(args.seed)

    raw_train = load_split(args.data / "train.tsv", args.train, args.seed)
    raw_test = load_split(args.data / "test.tsv", args.test, args.seed + 1)
    names = sorted({label for _, label in raw_train})
    labels = {name: i for i, name in enumerate(names)}
    rows: list[Row] = [(f"agnews-{i:05d}", t, labels[n]) for i, (t, n) in enumerate(raw_train)]
    ids = [r[0] for r in rows]
    owners = subjects_of(len(rows), args.subjects, args.seed)
    members: dict[str, list[str]] = {}
    for i, owner in zip(ids, owners, strict=True):
        members.setdefault(owner, []).append(i)
    test_texts = [text for text, _ in raw_test]
    test_labels = torch.tensor([labels[name] for _, name in raw_test])
    config = S3TConfig(
        n_shards=args.shards,
        n_slices=args.slices,
        budget=1,  # one order per shard: placement, not the budget, is what is compared
        n_labels=len(names),
        epochs_per_stage=args.epochs,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=args.seed,
    )
    spec = ModelSpec.plan(config)
    rules = placements(ids, owners, args.shards, args.slices, args.batches)
    backbone = load_backbone()
    report: dict[str, Any] = {
        "setup": {
            "backbone": "all-MiniLM-L6-v2 (6 layers, hidden 384)",
            "train_rows": len(rows),
            "test_rows": len(test_texts),
            "subjects": args.subjects,
            "subject_sizes": sorted((len(m) for m in members.values()), reverse=True),
            "subject_batches": args.batches,
            "config": config.to_dict(),
            "orders": [list(o) for o in spec.orders],
            "threads": torch.get_num_threads(),
        },
        "placements": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-placement-") as tmp:
        engine = S3TEngine(backbone, LocalArtifactStore(tmp))
        for name, placed in rules.items():
            entry = slice_report(placed, members, spec)
            samples = [
                TrainingSample(i, placed[i].shard, placed[i].slice, text, float(label))
                for i, text, label in rows
            ]
            log(f"{name}: training on slices {entry['sizes']}")
            start = time.perf_counter()
            layers = engine.train(spec, samples)
            entry["train_seconds"] = round(time.perf_counter() - start, 1)
            held = {s.shard for s in samples}
            prefixes = {
                shard: [
                    x.artifact
                    for x in sorted(layers, key=lambda x: x.stage)
                    if x.shard == shard and x.sequence == 0
                ]
                for shard in sorted(held)
            }
            prediction = engine.predict(config, test_texts, prefixes)
            accuracy = float((prediction.outputs.argmax(-1) == test_labels).float().mean())
            entry["served_shards"] = len(prefixes)
            entry["test_accuracy"] = round(accuracy, 4)
            log(f"{name}: accuracy {accuracy:.4f}")
            report["placements"][name] = entry
    by = report["placements"]
    report["summary"] = {
        "balanced_within_bound": by["subject_balanced"]["within_bound_mean_plus_largest_subject"],
        "hash_within_bound": by["subject_hash"]["within_bound_mean_plus_largest_subject"],
        "accuracy_gap_balanced_vs_sample": round(
            by["sample"]["test_accuracy"] - by["subject_balanced"]["test_accuracy"], 4
        ),
        "accuracy_gap_hash_vs_sample": round(
            by["sample"]["test_accuracy"] - by["subject_hash"]["test_accuracy"], 4
        ),
    }
    text = json.dumps(report, indent=2)
    print(text)
    args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
