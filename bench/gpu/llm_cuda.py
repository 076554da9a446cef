"""The decoder (causal LM) path of S3T on a CUDA GPU; prints one JSON object (progress on stderr).

Base: a random-weight Llama built here from a config (nothing can be downloaded on the GPU
machine): 8 layers, 512 wide, 8 attention heads (4 key/value heads), MiniLM's 30,522-token
vocabulary (``unlearning.families.testing``). Data: instruction pairs built from a few word
lists. S3T: 2 shards, 4 slices (2 layers a block), 2 orders, LoRA rank 8 on every attention and
MLP projection, 1 epoch a stage. In each precision (``--precisions``, default bfloat16 and
float32), on ``--device`` (default cuda):

- ``bitwise_exact``: train, delete two samples of the first slice of shard 0's first order,
  retrain every touched sequence from its first invalid stage, and train afresh without them:
  true only when every (shard, sequence, stage) artifact is equal and the deletion did change
  the model; with the seconds of each and the peak GPU memory;
- ``checkpointing_equal``: the same training with gradient checkpointing gives the same bytes,
  with its seconds and peak memory (bfloat16 only, or the first precision);
- ``generation``: tokens per second of greedy generation from the live shards (every shard's
  full prefix) with 1 and 8 prompts at once (threads, as the service's concurrent requests, one
  forward pass at a time as its registry serves them), each ``--new-tokens`` tokens, and the
  per-token latency p50/p99 (a token's wait for the others included);
- ``int8``: whether bitsandbytes is there (it is not on the GPU image: the entry says so).

``--compare-cpu`` trains the same model on the CPU (``--cpu-precisions``, default float32) and
gives the CPU/GPU training-time ratio. ``--quick`` shrinks everything (4 layers, 64 wide, 24
samples, 4 tokens) for a smoke run; ``--device cpu --quick`` runs the whole script up to the
CUDA calls on a machine without a GPU. About 1.5 minutes on an H100 with ``--compare-cpu``.

Usage: ``python bench/gpu/llm_cuda.py [--device cuda] [--compare-cpu] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from unlearning.artifacts import LocalArtifactStore  # noqa: E402
from unlearning.device import make_deterministic, resolve_device, runtime_info  # noqa: E402
from unlearning.families import Conversation  # noqa: E402
from unlearning.families.testing import save_tiny_model  # noqa: E402
from unlearning.precision import int8_available, require_usable  # noqa: E402
from unlearning.s3t import (  # noqa: E402
    Backbone,
    Generation,
    ModelSpec,
    S3TConfig,
    S3TEngine,
    Sampling,
    Task,
    TrainedLayer,
    TrainingSample,
    load_backbone,
)
from unlearning.s3t.generation import prompt_ids  # noqa: E402
from unlearning.sharding import assign  # noqa: E402

T = TypeVar("T")
Key = tuple[int, int, int]
WORDS = [
    ["stocks", "market", "profit", "bank", "shares", "trade"],
    ["match", "goal", "team", "season", "coach", "league"],
    ["chip", "software", "space", "laptop", "robot", "network"],
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_base(folder: Path, args: argparse.Namespace) -> Path:
    """The random Llama: ``--layers`` x ``--hidden``, heads of 64 (at least 2), half as many
    key/value heads, an MLP twice as wide, weights at the usual 0.02."""
    heads = max(2, args.hidden // 64)
    overrides = {
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // 2),
        "head_dim": args.hidden // heads,
        "initializer_range": 0.02,
        "max_position_embeddings": 256,
    }
    return save_tiny_model(
        "llama", folder, n_layers=args.layers, hidden=args.hidden, overrides=overrides
    )


def samples(count: int, config: S3TConfig) -> list[TrainingSample]:
    out = []
    for i in range(count):
        words = WORDS[i % 3]
        shard, slice_ = assign("llm-cuda", f"s{i:04d}", config.n_shards, config.n_slices)
        prompt = f"tell me about {words[i % 6]} and {words[(i * 5) % 6]}"
        response = f"{words[(i * 3) % 6]} {words[(i * 7) % 6]} number {i} is the answer"
        pair = Conversation.pair(prompt, response)
        out.append(TrainingSample(f"s{i:04d}", shard, slice_, pair))
    return out


def s3t_config(backbone: Backbone, args: argparse.Namespace) -> S3TConfig:
    return S3TConfig(
        n_shards=2,
        n_slices=4,
        budget=2,
        task=Task.CAUSAL_LM,
        n_labels=1,
        lora_rank=8,
        lora_alpha=16.0,
        target_modules=backbone.family.default_targets,
        epochs_per_stage=1,
        learning_rate=1e-3,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=3,
    )


def index(layers: Sequence[TrainedLayer]) -> dict[Key, str]:
    return {(layer.shard, layer.sequence, layer.stage): layer.artifact for layer in layers}


def timed(device: torch.device, work: Callable[[], T]) -> tuple[T, float, float | None]:
    """``work()``, its seconds (the GPU synchronised) and the peak GPU memory in MiB."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    result = work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    else:
        peak = None
    return result, round(time.perf_counter() - start, 3), peak


def delete_and_retrain(
    engine: S3TEngine,
    spec: ModelSpec,
    data: list[TrainingSample],
    trained: dict[Key, str],
) -> tuple[dict[Key, str], list[TrainingSample]]:
    """What the service does for a deletion: two samples of shard 0's first-order slice 1,
    every touched sequence retrained from its first invalid stage."""
    slice_ = spec.orders[0][0]
    deleted = [s for s in data if (s.shard, s.slice) == (0, slice_)][:2]
    remaining = [s for s in data if s not in deleted]
    after = dict(trained)
    for key, first in engine.affected_stages(spec, [(s.shard, s.slice) for s in deleted]).items():
        prefix = [trained[(key.shard, key.sequence, stage)] for stage in range(1, first)]
        shard_samples = [s for s in remaining if s.shard == key.shard]
        after.update(index(engine.retrain(spec, key, first, shard_samples, prefix)))
    return after, remaining


def exactness(
    backbone: Backbone, args: argparse.Namespace, folder: Path, checkpointing: bool
) -> dict[str, Any]:
    device = backbone.device
    config = s3t_config(backbone, args)
    spec = ModelSpec.plan(config)
    data = samples(args.samples, config)
    engine = S3TEngine(backbone, LocalArtifactStore(folder / "a"))
    trained, train_s, train_mb = timed(device, lambda: index(engine.train(spec, data)))
    log(f"  trained in {train_s} s (peak {train_mb} MiB)")
    (retrained, remaining), retrain_s, _ = timed(
        device, lambda: delete_and_retrain(engine, spec, data, trained)
    )
    fresh_engine = S3TEngine(backbone, LocalArtifactStore(folder / "b"))
    fresh, fresh_s, _ = timed(device, lambda: index(fresh_engine.train(spec, remaining)))
    changed = sorted(key for key in trained if trained[key] != retrained[key])
    report: dict[str, Any] = {
        "compute_profile": backbone.compute_profile,
        "bitwise_exact": retrained == fresh and bool(changed),
        "stages_compared": len(fresh),
        "stages_retrained": len(changed),
        "train_s": train_s,
        "retrain_s": retrain_s,
        "fresh_s": fresh_s,
        "train_peak_mib": train_mb,
        "base_mib": round(backbone.memory_bytes / 2**20, 1),
    }
    log(f"  bitwise_exact {report['bitwise_exact']} (retrain {retrain_s} s, fresh {fresh_s} s)")
    if checkpointing:
        spec_ck = ModelSpec(replace(config, gradient_checkpointing=True), spec.orders)
        store = LocalArtifactStore(folder / "c")
        ck, ck_s, ck_mb = timed(
            device, lambda: index(S3TEngine(backbone, store).train(spec_ck, data))
        )
        report["checkpointing_equal"] = ck == trained
        report["checkpointing_train_s"] = ck_s
        report["checkpointing_peak_mib"] = ck_mb
        log(f"  checkpointing equal {ck == trained} ({ck_s} s, peak {ck_mb} MiB)")
    served = {shard: [retrained[(shard, 0, s)] for s in range(1, 5)] for shard in (0, 1)}
    report["generation"] = generation(engine, config, served, args)
    return report


def generation(
    engine: S3TEngine, config: S3TConfig, served: dict[int, list[str]], args: argparse.Namespace
) -> dict[str, Any]:
    device = engine.backbone.device
    tokenizer = engine.backbone.processor
    lm = engine.lm(config, served)
    prompts = [
        prompt_ids(tokenizer, Conversation.prompt(f"tell me about {WORDS[i % 3][i % 6]}"))
        for i in range(max(args.concurrency))
    ]

    # One forward pass at a time, as the service's registry serves (its adapters are hooks on
    # the one shared base): concurrent prompts interleave token by token.
    forward = threading.Lock()

    def one(prompt: list[int], latencies: list[float]) -> int:
        run = Generation(lm, prompt, Sampling())
        for _ in range(args.new_tokens):  # no stop at end-of-sequence: a fixed token count
            start = time.perf_counter()
            with forward:
                run.accept()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
            latencies.append(time.perf_counter() - start)
        return len(run.generated)

    one(prompts[0], [])  # warm-up (kernels, allocator)
    report: dict[str, Any] = {"new_tokens": args.new_tokens, "shards": len(served)}
    for concurrency in args.concurrency:
        latencies: list[float] = []
        counts: list[int] = []
        threads = [
            threading.Thread(
                target=lambda p, c, t: c.append(one(p, t)), args=(p, counts, latencies)
            )
            for p in prompts[:concurrency]
        ]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
        ordered = sorted(latencies)
        report[f"concurrent_{concurrency}"] = {
            "tokens": sum(counts),
            "seconds": round(wall, 3),
            "tokens_per_s": round(sum(counts) / wall, 1),
            "token_latency_ms_p50": round(1000 * statistics.median(ordered), 2),
            "token_latency_ms_p99": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 2),
        }
        log(f"  generation x{concurrency}: {report[f'concurrent_{concurrency}']}")
    return report


def cpu_training(base: Path, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The same S3T training on the CPU (torch's threads: every core)."""
    out: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    for precision in args.cpu_precisions:
        backbone = load_backbone(base, "cpu", precision)
        config = s3t_config(backbone, args)
        spec = ModelSpec.plan(config)
        engine = S3TEngine(backbone, LocalArtifactStore(folder / f"cpu-{precision}"))
        data = samples(args.samples, config)
        _, seconds, _ = timed(backbone.device, lambda: engine.train(spec, data))  # noqa: B023
        out[precision] = {"compute_profile": backbone.compute_profile, "train_s": seconds}
        log(f"cpu {precision}: trained in {seconds} s")
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    make_deterministic()  # before CUDA starts: the cuBLAS workspace
    device = resolve_device(args.device)
    report: dict[str, Any] = {
        "runtime": runtime_info(device),
        "model": {"family": "llama", "layers": args.layers, "hidden": args.hidden},
        "workload": {
            "samples": args.samples,
            "max_length": args.max_length,
            "batch_size": args.batch_size,
            "n_shards": 2,
            "n_slices": 4,
            "budget": 2,
            "lora_rank": 8,
            "epochs_per_stage": 1,
        },
        "precisions": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = build_base(root / "base", args)
        params = sum(p.numel() for p in load_backbone(base).model.parameters())
        report["model"]["parameters"] = params
        log(f"base: llama {args.layers} x {args.hidden}, {params / 1e6:.1f} M parameters")
        for number, precision in enumerate(args.precisions):
            log(f"{device} {precision}:")
            try:
                require_usable(precision, device)
            except ValueError as error:
                report["precisions"][precision] = {"skipped": str(error)}
                log(f"  skipped: {error}")
                continue
            checkpointing = precision == "bfloat16" or number == 0
            try:  # a failure is a finding: the other precisions still run
                backbone = load_backbone(base, device, precision)
                report["precisions"][precision] = exactness(
                    backbone, args, root / precision, checkpointing and not args.no_checkpointing
                )
                del backbone
            except Exception as error:  # reported, not raised
                report["precisions"][precision] = {"error": repr(error)}
                log(traceback.format_exc())
            if device.type == "cuda":
                torch.cuda.empty_cache()
        report["int8"] = {
            "available": int8_available(),
            "note": "bitsandbytes is not installed: int8 is refused, never replaced"
            if not int8_available()
            else "not measured here",
        }
        if args.compare_cpu:
            cpu = cpu_training(base, args, root)
            report["cpu"] = cpu
            report["cpu_over_device_training_time"] = {
                precision: round(cpu[precision]["train_s"] / entry["train_s"], 2)
                for precision, entry in report["precisions"].items()
                if precision in cpu and "train_s" in entry
            }
    exact = [e["bitwise_exact"] for e in report["precisions"].values() if "bitwise_exact" in e]
    report["bitwise_exact"] = bool(exact) and all(exact)
    return report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, auto or cpu")
    parser.add_argument("--precisions", default="bfloat16,float32")
    parser.add_argument("--compare-cpu", action="store_true", help="the same training on the CPU")
    parser.add_argument("--cpu-precisions", default="float32")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--output", default="", help="also write the JSON to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.layers, args.hidden, args.samples, args.new_tokens = 4, 64, 24, 4
        args.max_length = 32
    args.precisions = [p for p in args.precisions.split(",") if p]
    args.cpu_precisions = [p for p in args.cpu_precisions.split(",") if p]
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    report = run(args)
    text = json.dumps(report, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
