"""Sequences trained per second on one device against concurrency and batch size; prints JSON.

Each of ``c`` processes (spawned, so every one starts CUDA itself, as prefork pool children do
after their fork) loads the backbone on the device, tokenises one shard of AG News and trains
``--sequences`` slice sequences (L stages each) per configuration. The processes start each
configuration together (a barrier) and the wall time runs from the first start to the last end:
sequences per second = c x sequences / wall. The same order trained in every process must give
the same bytes (exactness does not depend on what else runs on the device), and the batch size
changes the model, so it is a model setting (``batch_size``), measured here for its cost only.

Usage: ``python bench/throughput.py --device cuda`` (``--help``); on the CPU,
``python bench/throughput.py --device cpu --samples 400 --batch-sizes 16,32 --concurrency 1,2``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = Path(os.environ.get("BENCH_DATA_DIR", ROOT.parent / "shared" / "data")) / "agnews"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_rows(path: Path, limit: int) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [
            (r[0], r[1])
            for r in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            if len(r) == 2
        ]
    random.Random(0).shuffle(rows)
    return rows[:limit]


def worker(
    rank: int,
    args: argparse.Namespace,
    barrier: Barrier,
    results: Any,
) -> None:
    """One process: load, then train ``args.sequences`` sequences per batch size."""
    import torch

    from unlearning.device import make_deterministic, resolve_device
    from unlearning.s3t import S3TConfig, TrainingSample, load_backbone
    from unlearning.s3t.blocks import stage_depths
    from unlearning.s3t.data import CachedHiddenStates, ShardData
    from unlearning.s3t.sequences import plan_sequences
    from unlearning.s3t.training import SequenceTrainer

    make_deterministic()
    device = resolve_device(args.device)
    if device.type == "cpu":  # share the cores, as prefork children on one machine would
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.current_concurrency))
    backbone = load_backbone(device=device)
    rows = load_rows(args.data / "train.tsv", args.samples)
    names = sorted({label for _, label in rows})
    for batch_size in args.batch_sizes:
        config = S3TConfig(
            n_shards=1,
            n_slices=args.slices,
            budget=args.slices,
            n_labels=len(names),
            epochs_per_stage=1,
            learning_rate=2e-3,
            batch_size=batch_size,
            max_length=args.max_length,
        )
        samples = [
            TrainingSample(f"s{i:05d}", 0, i % args.slices, text, float(names.index(label)))
            for i, (text, label) in enumerate(rows)
        ]
        data = ShardData.build(backbone, config, samples)
        depths = stage_depths(config.schedule, backbone.n_layers, config.n_slices)
        hidden = CachedHiddenStates(backbone, data.encoded, depths)
        hidden.at(max(depths), torch.arange(1, device=device))  # the shard's cache, built ahead
        orders = plan_sequences(config)
        trainer = SequenceTrainer(backbone, config)
        barrier.wait()
        started = time.monotonic()
        digests = []
        for k in range(args.sequences):
            stages = trainer.train(data, hidden, shard=0, sequence=k, order=orders[k % len(orders)])
            digests.append(hashlib.sha256(stages[-1].weights.to_bytes()).hexdigest())
        ended = time.monotonic()
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        results.put((batch_size, rank, started, ended, digests, peak))
        barrier.wait()


def measure(args: argparse.Namespace, concurrency: int) -> dict[int, dict[str, Any]]:
    context = mp.get_context("spawn")
    barrier = context.Barrier(concurrency)
    results = context.Queue()
    args.current_concurrency = concurrency
    processes = [
        context.Process(target=worker, args=(rank, args, barrier, results))
        for rank in range(concurrency)
    ]
    for process in processes:
        process.start()
    rows = [results.get(timeout=3600) for _ in range(concurrency * len(args.batch_sizes))]
    for process in processes:
        process.join(600)
        if process.exitcode != 0:
            raise RuntimeError(f"a benchmark process ended with exit code {process.exitcode}")
    out: dict[int, dict[str, Any]] = {}
    for batch_size in args.batch_sizes:
        mine = [r for r in rows if r[0] == batch_size]
        wall = max(r[3] for r in mine) - min(r[2] for r in mine)
        digests = {tuple(r[4]) for r in mine}
        peaks = [r[5] for r in mine if r[5] is not None]
        out[batch_size] = {
            "sequences": concurrency * args.sequences,
            "wall_s": round(wall, 2),
            "sequences_per_s": round(concurrency * args.sequences / wall, 3),
            "mean_sequence_s": round(
                statistics.fmean(r[3] - r[2] for r in mine) / args.sequences, 2
            ),
            "same_bytes_in_every_process": len(digests) == 1,
            "peak_gpu_memory_per_process_gb": round(max(peaks) / 2**30, 2) if peaks else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--samples", type=int, default=2000, help="samples of the shard")
    parser.add_argument("--slices", type=int, default=4, help="L: stages per sequence")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--sequences", type=int, default=2, help="per process and setting")
    parser.add_argument("--batch-sizes", default="32,64,128,256")
    parser.add_argument("--concurrency", default="1,2,4", help="processes on the device")
    args = parser.parse_args()
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]

    from unlearning.device import resolve_device, runtime_info

    grid: dict[str, Any] = {}
    for concurrency in levels:
        log(f"concurrency {concurrency}: batch sizes {args.batch_sizes}")
        for batch_size, figures in measure(args, concurrency).items():
            grid[f"c{concurrency}_b{batch_size}"] = {
                "concurrency": concurrency,
                "batch_size": batch_size,
                **figures,
            }
    baseline = grid[f"c{levels[0]}_b{args.batch_sizes[0]}"]["sequences_per_s"]
    for cell in grid.values():
        cell["vs_first_setting"] = round(cell["sequences_per_s"] / baseline, 2)
    best = max(grid.values(), key=lambda cell: cell["sequences_per_s"])
    runtime = runtime_info(resolve_device(args.device))  # spawned children share no CUDA state
    print(
        json.dumps(
            {
                "benchmark": "throughput",
                "runtime": runtime,
                "setup": {
                    "backbone": "all-MiniLM-L6-v2",
                    "shard_samples": args.samples,
                    "stages_per_sequence": args.slices,
                    "epochs_per_stage": 1,
                    "max_length": args.max_length,
                    "sequences_per_process": args.sequences,
                    "baseline": f"c{levels[0]}_b{args.batch_sizes[0]}",
                },
                "grid": grid,
                "fastest": {k: best[k] for k in ("concurrency", "batch_size", "sequences_per_s")},
                "every_setting_bitwise_equal_across_processes": all(
                    cell["same_bytes_in_every_process"] for cell in grid.values()
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
