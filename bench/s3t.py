"""S3T against full fine-tuning and SISA on AG News with the real MiniLM-L6 backbone.

Prints one JSON object (progress goes to stderr). Everything is measured in the same run, on the
same data, shards and hyper-parameters:

- test accuracy of full, SISA and S3T;
- accuracy after 1, 5, 10, 20, ... random sample deletions served *without* retraining (each
  shard falls back to its longest valid prefix; a shard with none drops out; a request that no
  shard can answer counts as wrong), S3T vs SISA, averaged over seeded trials;
- retraining cost per deletion: expected samples x epochs over a uniformly random deleted
  sample, and the seconds of one real retrain, for S3T, SISA and full;
- the training speed-up of frozen-bottom caching (same model, with vs without);
- ensemble inference throughput: batched vs sequential per-shard passes, and a single full model;
- simulated deletions until every shard is dead against m*L*H(m*min(B, L)).

With ``--device cuda`` everything runs on the GPU, and ``--compare-cpu`` trains the S3T model
once more on this machine's CPU cores in the same run: the ratio of the two is the GPU's
training speed-up (``training.s3t.cpu_over_device``). ``BENCH_DATA_DIR`` (default
``../shared/data``) is where ``agnews/`` lies.

Usage: python bench/s3t.py [--train 1600 --test 800 ...]; see --help. Takes ~10 min on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from unlearning.artifacts import LocalArtifactStore
from unlearning.device import make_deterministic, resolve_device, runtime_info
from unlearning.s3t import (
    ModelSpec,
    S3TConfig,
    S3TEngine,
    TrainedLayer,
    TrainingSample,
    load_backbone,
)
from unlearning.s3t.baselines import full_config, sisa_config
from unlearning.s3t.blocks import stage_depths
from unlearning.s3t.capacity import expected_deletions_until_dead, simulate_deletions_until_dead
from unlearning.s3t.data import CachedHiddenStates, HiddenStates, LiveHiddenStates, ShardData
from unlearning.s3t.ensemble import EnsemblePredictor, ServedShard
from unlearning.s3t.training import SequenceTrainer
from unlearning.sharding import assign

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # agnews, also when a test loads this file by its path
from agnews import DEFAULT_DATA, load_split  # noqa: E402

Stages = dict[tuple[int, int, int], str]  # (shard, sequence, stage) -> artifact


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def place(rows: Sequence[tuple[str, int]], config: S3TConfig) -> list[TrainingSample]:
    samples = []
    for i, (text, label) in enumerate(rows):
        sample_id = f"agnews-{i:05d}"
        shard, slice_ = assign("bench-s3t", sample_id, config.n_shards, config.n_slices)
        samples.append(TrainingSample(sample_id, shard, slice_, text, float(label)))
    return samples


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def index(layers: Sequence[TrainedLayer]) -> Stages:
    return {(x.shard, x.sequence, x.stage): x.artifact for x in layers}


def prefix_outputs(
    engine: S3TEngine, config: S3TConfig, texts: list[str], stages: Stages, chunk: int
) -> dict[tuple[int, int, int], torch.Tensor]:
    """Test outputs of every (shard, sequence, stage-k prefix), computed in batched passes."""
    keys = sorted(stages)
    served = {
        key: ServedShard.from_prefix(
            [engine.load_stage(stages[(key[0], key[1], s)]) for s in range(1, key[2] + 1)]
        )
        for key in keys
    }
    predictor = EnsemblePredictor(engine.backbone, config.target_modules)
    n_layers = engine.backbone.n_layers
    groups: dict[int, list[tuple[int, int, int]]] = {}
    for key in keys:  # same lowest adapted layer -> one pass shares the frozen bottom
        groups.setdefault(served[key].lowest_layer(n_layers), []).append(key)
    outputs: dict[tuple[int, int, int], list[torch.Tensor]] = {key: [] for key in keys}
    encoded = engine.backbone.encode(texts, config.max_length)
    for group in groups.values():
        for first in range(0, len(texts), chunk):
            rows = encoded.rows(torch.arange(first, min(first + chunk, len(texts))))
            result = predictor.shard_outputs(rows, [served[key] for key in group])
            for key, out in zip(group, result, strict=True):
                outputs[key].append(out)
    return {key: torch.cat(parts).cpu() for key, parts in outputs.items()}


def accuracy(outputs: torch.Tensor | None, labels: torch.Tensor) -> float:
    if outputs is None:
        return 0.0  # no live shard: the service cannot answer
    return float((outputs.argmax(-1) == labels).float().mean())


def served_prefix(
    orders: Sequence[Sequence[int]], deleted_slices: set[int], n_slices: int
) -> tuple[int, int] | None:
    """(sequence, stages) served by a shard: longest valid prefix, ties to the last trained."""
    best: tuple[int, int] | None = None
    for sequence, order in enumerate(orders):
        valid = min((order.index(s) for s in deleted_slices), default=n_slices)
        if valid > 0 and (best is None or valid >= best[1]):
            best = (sequence, valid)
    return best


def ensemble_accuracy(
    spec: ModelSpec,
    outputs: dict[tuple[int, int, int], torch.Tensor],
    labels: torch.Tensor,
    deleted: Sequence[TrainingSample],
) -> float:
    live = []
    for shard in range(spec.config.n_shards):
        hit = {s.slice for s in deleted if s.shard == shard}
        choice = served_prefix(spec.orders, hit, spec.config.n_slices)
        if choice is not None:
            live.append(outputs[(shard, *choice)])
    return accuracy(torch.stack(live).mean(0) if live else None, labels)


def deletion_curve(
    specs: dict[str, ModelSpec],
    outputs: dict[str, dict[tuple[int, int, int], torch.Tensor]],
    labels: torch.Tensor,
    samples: Sequence[TrainingSample],
    counts: Sequence[int],
    trials: int,
    seed: int,
) -> dict[str, Any]:
    rng = random.Random(seed)
    orders = [rng.sample(list(samples), max(counts)) for _ in range(trials)]
    curve: dict[str, Any] = {}
    for name, spec in specs.items():
        clean = ensemble_accuracy(spec, outputs[name], labels, [])
        points = {}
        for count in counts:
            accs = [ensemble_accuracy(spec, outputs[name], labels, o[:count]) for o in orders]
            points[str(count)] = {
                "accuracy": round(statistics.fmean(accs), 4),
                "drop": round(clean - statistics.fmean(accs), 4),
            }
        curve[name] = {"clean": round(clean, 4), "after_deletions": points}
    return curve


def expected_retrain_steps(spec: ModelSpec, samples: Sequence[TrainingSample]) -> dict[str, float]:
    """Samples x epochs to retrain after deleting one uniformly random training sample."""
    cfg = spec.config
    sizes: dict[tuple[int, int], int] = {}
    for s in samples:
        sizes[(s.shard, s.slice)] = sizes.get((s.shard, s.slice), 0) + 1

    def cost(shard: int, slice_: int, orders: Sequence[Sequence[int]]) -> int:
        total = 0
        for order in orders:
            first = order.index(slice_) + 1
            for stage in range(first, cfg.n_slices + 1):
                size = sum(sizes.get((shard, s), 0) for s in order[:stage])
                total += size - 1  # the deleted sample is gone
        return total * cfg.epochs_per_stage

    all_sequences = statistics.fmean(cost(s.shard, s.slice, spec.orders) for s in samples)
    served_only = statistics.fmean(cost(s.shard, s.slice, spec.orders[-1:]) for s in samples)
    return {"all_sequences": all_sequences, "one_sequence": served_only}


def retrain_once(
    engine: S3TEngine,
    spec: ModelSpec,
    stages: Stages,
    samples: Sequence[TrainingSample],
    victim: TrainingSample,
) -> dict[str, float]:
    remaining = [s for s in samples if s.id != victim.id and s.shard == victim.shard]
    steps, seconds = 0, 0.0
    for key, first in engine.affected_stages(spec, [(victim.shard, victim.slice)]).items():
        prefix = [stages[(key.shard, key.sequence, s)] for s in range(1, first)]
        layers, took = timed(lambda: engine.retrain(spec, key, first, remaining, prefix))  # noqa: B023
        steps += sum(x.sample_steps for x in layers)
        seconds += took
    return {"sample_epochs": steps, "seconds": round(seconds, 2)}


def caching_speedup(
    engine: S3TEngine, spec: ModelSpec, samples: Sequence[TrainingSample]
) -> dict[str, Any]:
    """Same model with and without frozen-bottom caching: the first stage of one sequence, and a
    whole shard (every sequence, all stages, one cache shared by all, its build included)."""
    shard = [s for s in samples if s.shard == 0]
    data = ShardData.build(engine.backbone, spec.config, shard)
    trainer = SequenceTrainer(engine.backbone, spec.config)
    cfg = spec.config
    depths = stage_depths(cfg.schedule, engine.backbone.n_layers, cfg.n_slices)

    def run(hidden: HiddenStates, last: int, orders: Sequence[Sequence[int]]) -> float:
        start = time.perf_counter()
        for sequence, order in enumerate(orders):
            trainer.train(data, hidden, shard=0, sequence=sequence, order=order, last_stage=last)
        return time.perf_counter() - start

    # First stage: the cache (every depth the stages need) built ahead, as it is for every
    # sequence after a shard's first.
    cached = CachedHiddenStates(engine.backbone, data.encoded, depths)
    _, build = timed(lambda: cached.at(max(depths), torch.arange(1, device=engine.backbone.device)))
    first_with = run(cached, 1, spec.orders[:1])
    first_without = run(LiveHiddenStates(engine.backbone, data.encoded), 1, spec.orders[:1])
    shard_with = run(
        CachedHiddenStates(engine.backbone, data.encoded, depths), cfg.n_slices, spec.orders
    )
    shard_without = run(LiveHiddenStates(engine.backbone, data.encoded), cfg.n_slices, spec.orders)
    return {
        "shard_samples": len(shard),
        "cache_build_seconds": round(build, 2),
        "first_stage": {
            "seconds_with_cache": round(first_with, 2),
            "seconds_without_cache": round(first_without, 2),
            "speedup": round(first_without / first_with, 2),
        },
        "whole_shard_all_sequences": {
            "seconds_with_cache_including_build": round(shard_with, 2),
            "seconds_without_cache": round(shard_without, 2),
            "speedup": round(shard_without / shard_with, 2),
        },
    }


def throughput(
    engine: S3TEngine,
    config: S3TConfig,
    texts: list[str],
    prefixes: dict[int, list[str]],
    batch: int,
    batched: bool,
    seconds: float,
) -> float:
    engine.predict(config, texts[:batch], prefixes, batched=batched)  # warm up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        first = (done * batch) % max(1, len(texts) - batch)
        engine.predict(config, texts[first : first + batch], prefixes, batched=batched)
        done += 1
    return done * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--train", type=int, default=1600, help="training samples")
    parser.add_argument("--test", type=int, default=600, help="test samples")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--budget", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--trials", type=int, default=200, help="random deletion orders")
    parser.add_argument("--deletions", default="1,5,10,20,40")
    parser.add_argument("--throughput-seconds", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, auto, cuda or cuda:N")
    parser.add_argument(
        "--compare-cpu", action="store_true", help="also train S3T on the CPU: the time ratio"
    )
    args = parser.parse_args()
    make_deterministic()
    torch.manual_seed(args.seed)

    device = resolve_device(args.device)
    backbone = load_backbone(device=device)
    raw_train = load_split(args.data / "train.tsv", args.train, args.seed)
    raw_test = load_split(args.data / "test.tsv", args.test, args.seed + 1)
    names = sorted({label for _, label in raw_train})
    labels = {name: i for i, name in enumerate(names)}
    base = S3TConfig(
        n_shards=args.shards,
        n_slices=args.slices,
        budget=args.budget,
        n_labels=len(names),
        epochs_per_stage=args.epochs,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=args.seed,
    )
    rows = [(text, labels[label]) for text, label in raw_train]
    test_texts = [text for text, _ in raw_test]
    test_labels = torch.tensor([labels[label] for _, label in raw_test])
    specs = {
        "s3t": ModelSpec.plan(base),
        "sisa": ModelSpec.plan(sisa_config(base)),
        "full": ModelSpec.plan(full_config(base)),
    }
    samples = {name: place(rows, spec.config) for name, spec in specs.items()}

    with tempfile.TemporaryDirectory(prefix="bench-s3t-") as tmp:
        engine = S3TEngine(backbone, LocalArtifactStore(tmp))
        trained: dict[str, Stages] = {}
        report: dict[str, Any] = {
            "setup": {
                "backbone": "all-MiniLM-L6-v2 (6 layers, hidden 384)",
                "train_samples": len(rows),
                "test_samples": len(test_texts),
                "config": base.to_dict(),
                "orders": [list(o) for o in specs["s3t"].orders],
                "threads": torch.get_num_threads(),
                "runtime": runtime_info(device),
            }
        }
        training: dict[str, Any] = {}
        for name, spec in specs.items():
            log(f"training {name}")
            layers, seconds = timed(lambda: engine.train(spec, samples[name]))  # noqa: B023
            trained[name] = index(layers)
            training[name] = {
                "seconds": round(seconds, 1),
                "sample_epochs": sum(x.sample_steps for x in layers),
                "stages_trained": len(layers),
            }
        if args.compare_cpu:
            log("training s3t on the CPU, for the ratio")
            on_cpu = S3TEngine(load_backbone(device="cpu"), LocalArtifactStore(f"{tmp}/cpu"))
            _, cpu_seconds = timed(lambda: on_cpu.train(specs["s3t"], samples["s3t"]))
            training["s3t"]["cpu_seconds"] = round(cpu_seconds, 1)
            training["s3t"]["cpu_over_device"] = round(cpu_seconds / training["s3t"]["seconds"], 2)
        report["training"] = training

        log("test outputs of every prefix")
        outputs = {
            name: prefix_outputs(engine, spec.config, test_texts, trained[name], chunk=50)
            for name, spec in specs.items()
        }
        counts = [int(c) for c in args.deletions.split(",")]
        curve = deletion_curve(
            {k: specs[k] for k in ("s3t", "sisa")},
            outputs,
            test_labels,
            samples["s3t"],
            counts,
            args.trials,
            args.seed,
        )
        full_accuracy = ensemble_accuracy(specs["full"], outputs["full"], test_labels, [])
        report["accuracy"] = {
            "full": round(full_accuracy, 4),
            "sisa": curve["sisa"]["clean"],
            "s3t": curve["s3t"]["clean"],
        }
        report["deletions_served_without_retraining"] = curve

        log("retraining one random deletion")
        victim_index = random.Random(args.seed + 7).randrange(len(rows))
        retraining: dict[str, Any] = {}
        for name, spec in specs.items():
            victim = samples[name][victim_index]
            expected = expected_retrain_steps(spec, samples[name])
            retraining[name] = {
                "expected_sample_epochs_per_deletion": round(expected["all_sequences"], 1),
                "one_deletion": retrain_once(engine, spec, trained[name], samples[name], victim),
            }
            if name == "s3t":
                retraining[name]["expected_sample_epochs_serving_sequence_only"] = round(
                    expected["one_sequence"], 1
                )
        report["retraining"] = retraining

        log("frozen-bottom caching")
        report["caching"] = caching_speedup(engine, specs["s3t"], samples["s3t"])

        log("inference throughput")
        n = base.n_slices
        s3t_prefixes = {
            shard: [
                trained["s3t"][(shard, len(specs["s3t"].orders) - 1, s)] for s in range(1, n + 1)
            ]
            for shard in range(base.n_shards)
        }
        full_prefix = {0: [trained["full"][(0, 0, 1)]]}
        inference: dict[str, Any] = {}
        for batch in (1, 32):
            batched = throughput(
                engine, base, test_texts, s3t_prefixes, batch, True, args.throughput_seconds
            )
            sequential = throughput(
                engine, base, test_texts, s3t_prefixes, batch, False, args.throughput_seconds
            )
            single = throughput(
                engine,
                specs["full"].config,
                test_texts,
                full_prefix,
                batch,
                True,
                args.throughput_seconds,
            )
            inference[f"batch_{batch}"] = {
                "s3t_batched_texts_per_s": round(batched, 1),
                "s3t_sequential_texts_per_s": round(sequential, 1),
                "full_model_texts_per_s": round(single, 1),
                "batched_over_sequential": round(batched / sequential, 2),
                "batched_over_full_model": round(batched / single, 2),
            }
        report["inference"] = inference

    log("deletion capacity")
    capacity: dict[str, Any] = {}
    for name in ("s3t", "sisa"):
        cfg = specs[name].config
        formula = expected_deletions_until_dead(cfg.n_shards, cfg.n_slices, cfg.budget)
        simulated = simulate_deletions_until_dead(
            cfg.n_shards, cfg.n_slices, specs[name].orders, trials=20000, seed=args.seed
        )
        capacity[name] = {
            "expected_mLH": round(formula, 2),
            "simulated": round(simulated, 2),
            "relative_error": round(abs(simulated - formula) / formula, 4),
        }
    report["deletions_until_every_shard_is_dead"] = capacity

    # The "10 % of the shard count" is below one deletion with 4 shards; the check uses
    # 10 deletions (2.5 per shard), and the whole curve is in the JSON.
    check = str(min(counts, key=lambda c: abs(c - 10)))
    s3t_drop = curve["s3t"]["after_deletions"][check]["drop"]
    sisa_drop = curve["sisa"]["after_deletions"][check]["drop"]
    report["targets"] = {
        "s3t_within_2_points_of_full": report["accuracy"]["s3t"] >= full_accuracy - 0.02,
        f"s3t_drop_at_most_half_of_sisa_after_{check}_deletions": s3t_drop <= sisa_drop / 2,
        "caching_speedup_first_stage_at_least_3x": report["caching"]["first_stage"]["speedup"] >= 3,
        "batched_inference_at_least_1_5x_at_batch_1": inference["batch_1"][
            "batched_over_sequential"
        ]
        >= 1.5,
        "capacity_within_5_percent": all(c["relative_error"] <= 0.05 for c in capacity.values()),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
