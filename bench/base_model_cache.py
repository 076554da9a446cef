"""One worker's engine catalogue serving models on three base models at once, within its memory
bound (``UNLEARN_BASE_MODEL_CACHE_MB``).

Three base models of three families: the real MiniLM-L6 (BERT, 22.7 M parameters) and two
random-weight ones built from configs (a DistilBERT and a ViT of about a third of its size).
One S3T model on each is trained, then predictions go round-robin to the three models, as a
worker's jobs and an API process's predictions would. Two runs, each in a process of its own
(so that resident memory is its own): the catalogue bounded to hold the two largest base models,
never all three, and unbounded (the baseline: every base model stays loaded). Per run: the bytes
the catalogue holds after every step (its own count of parameters and buffers), the process's
resident memory (VmRSS), loads and evictions, and the seconds a reload costs; whether every
answer came and the bound held.

Usage: python bench/base_model_cache.py [--rounds 3] > bench/results-base-model-cache.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROUNDS = 3
#: MiniLM-L6, then two random-weight base models of other families.
BASES = ("minilm", "distilbert", "vit")


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def make_bases(root: Path) -> dict[str, Path]:
    from unlearning.families.testing import save_tiny_model
    from unlearning.s3t import default_backbone_path

    return {
        "minilm": default_backbone_path(),
        "distilbert": save_tiny_model("distilbert", root / "distilbert", n_layers=4, hidden=128),
        "vit": save_tiny_model("vit", root / "vit", n_layers=4, hidden=512),
    }


def run(limit_bytes: int | None, rounds: int) -> dict[str, Any]:
    """One process's run (see the module docstring); ``None``: unbounded."""
    import torch

    from service.engine import BaseModelKey, EngineCatalogue
    from service.settings import Settings
    from unlearning.base_models import weights_digest
    from unlearning.families.testing import digit_images
    from unlearning.s3t import ModelSpec, S3TConfig, TrainingSample

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="bench-bases-"))
    folders = make_bases(root)
    keys = {n: BaseModelKey(n, str(f), weights_digest(f)) for n, f in folders.items()}
    settings = Settings(data_dir=root, artifacts_dir=root / "artifacts")
    catalogue = EngineCatalogue(settings, limit_bytes=limit_bytes or 1 << 62)
    rss_start = rss_bytes()
    images = digit_images(24)
    texts = [f"{'good' if i % 2 else 'bad'} item {i}" for i in range(24)]
    trained: dict[str, tuple[S3TConfig, dict[int, list[str]]]] = {}
    held: list[int] = []
    rss: list[int] = []
    sizes: dict[str, int] = {}
    loads = 0
    load_s: list[float] = []
    answers = 0

    def engine_of(name: str) -> Any:
        nonlocal loads
        before = set(catalogue.loaded)
        started = time.perf_counter()
        engine = catalogue.engine(keys[name])
        if name not in before:
            loads += 1
            load_s.append(time.perf_counter() - started)
            sizes[name] = engine.backbone.memory_bytes
        return engine

    for name in BASES:
        engine = engine_of(name)
        image = engine.backbone.modality == "image"
        config = S3TConfig(
            n_shards=1, n_slices=2, budget=1, n_labels=2, epochs_per_stage=1, batch_size=8,
            max_length=16, target_modules=engine.backbone.family.default_targets,
        )  # fmt: skip
        samples = [
            TrainingSample(f"s{i:02d}", 0, i % 2, images[i][0] if image else texts[i], i % 2)
            for i in range(24)
        ]
        layers = engine.train(ModelSpec.plan(config), samples)
        trained[name] = (config, {0: [layer.artifact for layer in layers]})
        held.append(catalogue.held_bytes)
        rss.append(rss_bytes())
    for _ in range(rounds):
        for name in BASES:
            engine = engine_of(name)
            config, prefixes = trained[name]
            probe = [images[0][0]] if engine.backbone.modality == "image" else ["good thing"]
            outputs = engine.predict(config, probe, prefixes).outputs
            answers += int(bool(torch.isfinite(outputs).all()))
            held.append(catalogue.held_bytes)
            rss.append(rss_bytes())
    return {
        "limit_bytes": limit_bytes,
        "base_model_bytes": sizes,
        "max_held_bytes": max(held),
        "held_within_bound": limit_bytes is None or max(held) <= limit_bytes,
        "loads": loads,
        "evictions": loads - len(catalogue.loaded),
        "reload_s_mean": round(sum(load_s[3:]) / len(load_s[3:]), 3) if load_s[3:] else None,
        "answers": answers,
        "predictions": rounds * len(BASES),
        "rss_start_mb": round(rss_start / 2**20, 1),
        "rss_max_mb": round(max(rss) / 2**20, 1),
        "rss_end_mb": round(rss[-1] / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--child", choices=("bounded", "unbounded"), help=argparse.SUPPRESS)
    parser.add_argument("--limit-bytes", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run(args.limit_bytes, args.rounds)))
        return

    def child(kind: str, limit: int | None) -> dict[str, Any]:
        command = [sys.executable, __file__, "--child", kind, "--rounds", str(args.rounds)]
        if limit is not None:
            command += ["--limit-bytes", str(limit)]
        print(f"{kind} run ...", file=sys.stderr)
        done = subprocess.run(command, check=True, capture_output=True, text=True)  # noqa: S603
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    unbounded = child("unbounded", None)
    sizes = sorted(unbounded["base_model_bytes"].values())
    limit = sizes[-1] + sizes[-2]  # the two largest, never all three
    bounded = child("bounded", limit)
    print(
        json.dumps(
            {
                "bench": "base_model_cache",
                "bases": list(BASES),
                "bound_bytes": limit,
                "sum_of_bases_bytes": sum(sizes),
                "bounded": bounded,
                "unbounded": unbounded,
                "held_bytes_bounded_over_unbounded": round(
                    bounded["max_held_bytes"] / unbounded["max_held_bytes"], 3
                ),
                "rss_growth_bounded_over_unbounded": round(
                    (bounded["rss_max_mb"] - bounded["rss_start_mb"])
                    / (unbounded["rss_max_mb"] - unbounded["rss_start_mb"]),
                    3,
                ),
                "targets": {
                    "three_bases_served": bounded["answers"] == bounded["predictions"],
                    "held_within_bound": bounded["held_within_bound"],
                    "bound_below_all_three": limit < sum(sizes),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
