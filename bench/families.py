"""Every architecture family through the S3T engine, against full LoRA fine-tuning of the same
base on the same data; prints one JSON object (progress on stderr).

Bases: the ``bert`` family on the real MiniLM-L6 (the only pretrained encoder that exists
offline here) on AG News; RoBERTa, XLM-RoBERTa, DeBERTa-v2, DistilBERT and ModernBERT as tiny
random-weight models (``unlearning.families.testing``) on the same AG News rows, with a tiny
BERT beside them as the like-for-like reference; ViT and DeiT as tiny random-weight models on
scikit-learn's 1,797 real handwritten digits (PNG bytes through the base model's image
processor). Each entry says which base and data it ran on.

Per family, all in one run, every figure against its baseline of the same run:

- training: seconds per 1,000 samples of the S3T model and of full LoRA (one shard, one slice,
  LoRA on every adapted layer, :func:`unlearning.s3t.baselines.full_config`), and their ratio;
- accuracy on held-out data (AG News test rows; the digits split train/test) of both;
- a random 1 % deletion: the exact retrain (every touched sequence from its first invalid stage)
  in seconds and sample-epochs as a share of the S3T training, and against training the full
  LoRA model again (what the same deletion costs it); the retrain of the served sequence alone;
- ``bitwise_exact``: the retrained artifacts against a fresh training without the deleted
  samples, every (shard, sequence, stage) compared (true only when compared and equal, and the
  deletion did change the model);
- served without retraining: the accuracy of the valid prefixes right after the 1 % deletion;
  and single-sample deletions in the library alone (``library_deletion``): the bookkeeping
  (invalidated stages, valid prefixes) and deletion -> clean prediction without the service;
- the service (``--service``, on by default): the family's folder registered as a base model of
  the app running in this process on an embedded SQLite database, a model created, trained and
  deleted from through the API (images as base64 PNGs): ``POST /deletions`` 202 p50/p99 and
  deletion -> first prediction naming none of the deleted layers (``service`` in each entry;
  see ``bench/families_service.py``), and that against retraining the full LoRA model.

Random-weight bases barely learn AG News (near the 25 % of chance, S3T and full LoRA alike):
the text accuracy that says something is MiniLM's; the tiny text families show exactness and
cost. ``--quick`` is a smoke run of about three minutes; ``--device cuda`` runs it on a GPU; on the
CPU, torch runs one thread (``--threads``), which a machine shared with other work slows least.
``BENCH_DATA_DIR`` (default ``../shared/data``) is where ``agnews/`` lies.

Usage: ``python bench/families.py [--quick] [--families bert,vit] [--output FILE]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch

from unlearning.artifacts import LocalArtifactStore
from unlearning.device import make_deterministic, resolve_device, runtime_info
from unlearning.families import Content, Modality
from unlearning.families.testing import IMAGE_FAMILIES, TEXT_FAMILIES, digit_images
from unlearning.families.testing import save_tiny_model as save_tiny_family
from unlearning.s3t import (
    Backbone,
    ModelSpec,
    S3TConfig,
    S3TEngine,
    TrainedLayer,
    TrainingSample,
    default_backbone_path,
    load_backbone,
)
from unlearning.s3t.baselines import full_config
from unlearning.sharding import assign

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # families_service, also when a test loads this file

from agnews import DEFAULT_DATA, load_split  # noqa: E402
from timing import summary_ms  # noqa: E402

#: Every run in the order they are measured: (family, base). ``minilm`` is the real
#: MiniLM-L6; ``tiny`` a random-weight model of the family.
RUNS: tuple[tuple[str, str], ...] = (
    ("bert", "minilm"),
    *((family, "tiny") for family in TEXT_FAMILIES),
    *((family, "tiny") for family in IMAGE_FAMILIES),
)
Stages = dict[tuple[int, int, int], str]  # (shard, sequence, stage) -> artifact
Row = tuple[Content, int]
T = TypeVar("T")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


@dataclass(frozen=True)
class Sizes:
    """Samples and settings of one kind of run (MiniLM, a tiny text model, a tiny image one)."""

    train: int
    test: int
    epochs: int
    learning_rate: float
    max_length: int  # tokens of a text (images: unused)


#: MiniLM as bench/s3t.py trains it; the tiny text models on 48 tokens (a tiny RoBERTa's
#: positions end at 64, its padding offset included).
FULL = {
    "minilm": Sizes(train=320, test=300, epochs=1, learning_rate=2e-3, max_length=64),
    "text": Sizes(train=1000, test=300, epochs=2, learning_rate=1e-2, max_length=48),
    "image": Sizes(train=1397, test=400, epochs=5, learning_rate=1e-2, max_length=48),
}
QUICK = {
    "minilm": Sizes(train=120, test=80, epochs=1, learning_rate=2e-3, max_length=64),
    "text": Sizes(train=300, test=100, epochs=1, learning_rate=1e-2, max_length=48),
    "image": Sizes(train=400, test=100, epochs=3, learning_rate=1e-2, max_length=48),
}


@dataclass(frozen=True)
class Data:
    """A modality's labelled train and test rows."""

    name: str
    labels: tuple[str, ...]
    train: list[Row]
    test: list[Row]


def text_data(folder: Path, sizes: Sizes, seed: int) -> Data:
    train = load_split(folder / "train.tsv", sizes.train, seed)
    test = load_split(folder / "test.tsv", sizes.test, seed + 1)
    names = tuple(sorted({label for _, label in train}))
    index = {name: i for i, name in enumerate(names)}
    return Data(
        f"AG News ({len(train)} train / {len(test)} test rows of {folder})",
        names,
        [(text, index[label]) for text, label in train],
        [(text, index[label]) for text, label in test],
    )


def image_data(sizes: Sizes, seed: int) -> Data:
    """scikit-learn's digits, shuffled once, split train/test."""
    rows: list[Row] = list(digit_images())
    random.Random(seed).shuffle(rows)
    if sizes.train + sizes.test > len(rows):
        raise SystemExit(
            f"the digits hold {len(rows)} images, asked for {sizes.train}+{sizes.test}"
        )
    return Data(
        f"scikit-learn digits, 8x8 PNG upscaled to the patch grid ({sizes.train} train / "
        f"{sizes.test} test of 1,797)",
        tuple(str(d) for d in range(10)),
        rows[: sizes.train],
        rows[sizes.train : sizes.train + sizes.test],
    )


def place(rows: Sequence[Row], config: S3TConfig, key: str) -> list[TrainingSample]:
    samples = []
    for i, (content, label) in enumerate(rows):
        sample_id = f"{key}-{i:05d}"
        shard, slice_ = assign(key, sample_id, config.n_shards, config.n_slices)
        samples.append(TrainingSample(sample_id, shard, slice_, content, float(label)))
    return samples


def index(layers: Sequence[TrainedLayer]) -> Stages:
    return {(x.shard, x.sequence, x.stage): x.artifact for x in layers}


def served_prefixes(
    spec: ModelSpec, stages: Stages, deleted: Sequence[TrainingSample]
) -> dict[int, list[str]]:
    """What the service serves right after ``deleted`` go, before any retrain: per shard the
    longest valid prefix of its orders (ties to the last trained), none for a dead shard."""
    n_slices = spec.config.n_slices
    prefixes: dict[int, list[str]] = {}
    for shard in range(spec.config.n_shards):
        hit = {s.slice for s in deleted if s.shard == shard}
        best: tuple[int, int] | None = None
        for sequence, order in enumerate(spec.orders):
            valid = min((order.index(s) for s in hit), default=n_slices)
            if valid > 0 and (best is None or valid >= best[1]):
                best = (sequence, valid)
        if best is not None:
            prefixes[shard] = [stages[(shard, best[0], s)] for s in range(1, best[1] + 1)]
    return prefixes


def accuracy(
    engine: S3TEngine,
    config: S3TConfig,
    rows: Sequence[Row],
    prefixes: dict[int, list[str]],
    chunk: int = 100,
) -> float:
    if not prefixes:
        return 0.0  # every shard dead: no answer
    right = 0
    for first in range(0, len(rows), chunk):
        part = rows[first : first + chunk]
        labels = engine.predict(config, [c for c, _ in part], prefixes).labels.cpu()
        right += int((labels == torch.tensor([y for _, y in part])).sum())
    return right / len(rows)


def library_deletions(
    engine: S3TEngine,
    spec: ModelSpec,
    trained: Stages,
    samples: Sequence[TrainingSample],
    probe: Content,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Single-sample deletions in the library alone, each on the whole model: what the service
    adds its database and HTTP work to. The bookkeeping (the stages it invalidates, the valid
    prefixes left to serve), then one prediction from those prefixes: deletion -> clean
    prediction without the service."""
    engine.predict(spec.config, [probe], served_prefixes(spec, trained, []))  # warm, as served
    bookkeeping: list[float] = []
    to_clean: list[float] = []
    rng = random.Random(args.seed + 11)
    for victim in rng.sample(list(samples), min(args.service_deletions, len(samples))):
        started = time.perf_counter()
        engine.affected_stages(spec, [(victim.shard, victim.slice)])
        prefixes = served_prefixes(spec, trained, [victim])
        bookkept = time.perf_counter()
        engine.predict(spec.config, [probe], prefixes)
        bookkeeping.append(bookkept - started)
        to_clean.append(time.perf_counter() - started)
    return {
        "deletions": len(to_clean),
        "bookkeeping": summary_ms(bookkeeping),
        "to_clean_prediction": summary_ms(to_clean),
    }


def retrain(
    engine: S3TEngine,
    spec: ModelSpec,
    trained: Stages,
    deleted: Sequence[TrainingSample],
    remaining: Sequence[TrainingSample],
) -> tuple[Stages, dict[str, Any]]:
    """What a worker does for a deletion: every touched sequence from its first invalid stage,
    each timed; the served (last) sequence's share apart."""
    after = dict(trained)
    seconds = served_seconds = 0.0
    steps = served_steps = 0
    affected = engine.affected_stages(spec, [(s.shard, s.slice) for s in deleted])
    for key, first in affected.items():
        prefix = [trained[(key.shard, key.sequence, stage)] for stage in range(1, first)]
        shard = [s for s in remaining if s.shard == key.shard]
        layers, took = timed(lambda: engine.retrain(spec, key, first, shard, prefix))  # noqa: B023
        work = sum(x.sample_steps for x in layers)
        seconds, steps = seconds + took, steps + work
        if key.sequence == len(spec.orders) - 1:
            served_seconds, served_steps = served_seconds + took, served_steps + work
        after.update(index(layers))
    return after, {
        "sequences_retrained": len(affected),
        "seconds": seconds,
        "sample_epochs": steps,
        "served_sequence_seconds": served_seconds,
        "served_sequence_sample_epochs": served_steps,
    }


def config_for(
    backbone: Backbone, sizes: Sizes, args: argparse.Namespace, n_labels: int
) -> S3TConfig:
    return S3TConfig(
        n_shards=args.shards,
        n_slices=args.slices,
        budget=args.budget,
        n_labels=n_labels,
        lora_rank=args.rank,
        target_modules=backbone.family.default_targets,
        epochs_per_stage=sizes.epochs,
        learning_rate=sizes.learning_rate,
        batch_size=args.batch_size,
        max_length=sizes.max_length,
        seed=args.seed,
    )


def per_1000(seconds: float, samples: int) -> float:
    return round(seconds / samples * 1000, 3)


def measure(
    family: str,
    base: str,
    backbone: Backbone,
    data: Data,
    sizes: Sizes,
    args: argparse.Namespace,
    tmp: Path,
) -> dict[str, Any]:
    """Every library figure of one family (see the module's docstring)."""
    config = config_for(backbone, sizes, args, len(data.labels))
    spec = ModelSpec.plan(config)
    key = f"families-{family}-{base}"
    samples = place(data.train, config, key)
    engine = S3TEngine(backbone, LocalArtifactStore(tmp / "store"))

    log(f"{family} ({base}): training S3T on {len(samples)} samples")
    layers, train_s = timed(lambda: engine.train(spec, samples))
    trained = index(layers)
    train_steps = sum(x.sample_steps for x in layers)
    last = len(spec.orders) - 1
    served = {
        shard: [trained[(shard, last, s)] for s in range(1, config.n_slices + 1)]
        for shard in range(config.n_shards)
    }
    accuracy_s3t = accuracy(engine, config, data.test, served)

    log(f"{family} ({base}): training full LoRA")
    full_spec = ModelSpec.plan(full_config(config))
    full_layers, full_s = timed(
        lambda: engine.train(full_spec, place(data.train, full_spec.config, key))
    )
    accuracy_full = accuracy(engine, full_spec.config, data.test, {0: [full_layers[0].artifact]})

    rng = random.Random(args.seed + 7)
    deleted = rng.sample(samples, max(1, round(len(samples) / 100)))
    gone = {s.id for s in deleted}
    remaining = [s for s in samples if s.id not in gone]
    after_deletion = served_prefixes(spec, trained, deleted)
    accuracy_no_retrain = accuracy(engine, config, data.test, after_deletion)
    library = library_deletions(engine, spec, trained, samples, data.test[0][0], args)

    log(f"{family} ({base}): retraining after a 1 % deletion ({len(deleted)} samples)")
    retrained, work = retrain(engine, spec, trained, deleted, remaining)
    log(f"{family} ({base}): a fresh training without them, for the comparison")
    fresh_engine = S3TEngine(backbone, LocalArtifactStore(tmp / "fresh"))
    fresh = index(fresh_engine.train(spec, remaining))
    changed = sum(retrained[k] != trained[k] for k in trained)
    equal = sum(retrained[k] == fresh.get(k) for k in retrained)
    bitwise_exact = retrained == fresh and changed > 0
    accuracy_retrained = accuracy(
        engine,
        config,
        data.test,
        {
            shard: [retrained[(shard, last, s)] for s in range(1, config.n_slices + 1)]
            for shard in range(config.n_shards)
        },
    )
    full_steps = sum(x.sample_steps for x in full_layers)
    return {
        "family": family,
        "modality": str(backbone.modality),
        "base": base_description(base, backbone),
        "data": data.name,
        "n_layers": backbone.n_layers,
        "hidden_size": backbone.hidden_size,
        "samples": {"train": len(data.train), "test": len(data.test), "classes": len(data.labels)},
        "config": {**config.to_dict(), "orders": [list(o) for o in spec.orders]},
        "bitwise_exact": bitwise_exact,
        "exactness": {
            "stages_compared": len(retrained),
            "stages_equal": equal,
            "stages_changed_by_the_deletion": changed,
        },
        "training_s_per_1000": per_1000(train_s, len(samples)),
        "training": {
            "s3t_seconds": round(train_s, 2),
            "s3t_sample_epochs": train_steps,
            "full_lora_seconds": round(full_s, 2),
            "full_lora_sample_epochs": full_steps,
            "full_lora_s_per_1000": per_1000(full_s, len(samples)),
            "s3t_over_full_lora": round(train_s / full_s, 2),
        },
        "accuracy_s3t": round(accuracy_s3t, 4),
        "accuracy_full_lora": round(accuracy_full, 4),
        "accuracy_s3t_minus_full_lora": round(accuracy_s3t - accuracy_full, 4),
        "accuracy_after_1pct_deletion_no_retrain": round(accuracy_no_retrain, 4),
        "accuracy_after_1pct_deletion_retrained": round(accuracy_retrained, 4),
        "retrain_share_1pct": round(work["seconds"] / train_s, 4),
        "retrain_1pct": {
            "deleted": len(deleted),
            "sequences_retrained": work["sequences_retrained"],
            "of_sequences": config.n_shards * len(spec.orders),
            "seconds": round(work["seconds"], 2),
            "sample_epochs": work["sample_epochs"],
            "sample_epochs_share": round(work["sample_epochs"] / train_steps, 4),
            "served_sequence_share": round(work["served_sequence_seconds"] / train_s, 4),
            "served_sequence_sample_epochs_share": round(
                work["served_sequence_sample_epochs"] / train_steps, 4
            ),
            # A full LoRA model holds every sample in its one set of weights: a deletion
            # means training it again on the rest.
            "over_full_lora_training": round(work["seconds"] / full_s, 4),
            "served_sequence_over_full_lora_training": round(
                work["served_sequence_seconds"] / full_s, 4
            ),
        },
        "library_deletion": library,
        "live_shards_after_1pct_deletion": len(after_deletion),
    }


def base_description(base: str, backbone: Backbone) -> str:
    if base == "minilm":
        shape = f"{backbone.n_layers} layers, hidden {backbone.hidden_size}"
        return f"all-MiniLM-L6-v2, pretrained ({shape})"
    return (
        f"tiny random-weight {backbone.family.name} ({backbone.n_layers} layers, hidden "
        f"{backbone.hidden_size}; unlearning.families.testing)"
    )


def base_folder(family: str, base: str, tmp: Path, args: argparse.Namespace) -> Path:
    if base == "minilm":
        return default_backbone_path()
    return save_tiny_family(
        family, tmp / "bases" / family, n_layers=args.tiny_layers, hidden=args.tiny_hidden
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the agnews folder")
    parser.add_argument("--quick", action="store_true", help="a smoke run of about three minutes")
    parser.add_argument(
        "--families",
        default="",
        help="comma-separated families to run (default: all); `bert` runs MiniLM and the tiny one",
    )
    parser.add_argument("--no-minilm", action="store_true", help="bert on the tiny model only")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--budget", type=int, default=2)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tiny-layers", type=int, default=4)
    parser.add_argument("--tiny-hidden", type=int, default=32)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads on the CPU (one: a shared machine's other work stalls no thread pool)",
    )
    parser.add_argument("--train", type=int, help="training samples of every run (overrides)")
    parser.add_argument("--test", type=int, help="test samples of every run (overrides)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, auto, cuda or cuda:N")
    parser.add_argument("--output", default="", help="also write the JSON to this file")
    parser.add_argument(
        "--service",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure each family through the API (--no-service: the library only)",
    )
    parser.add_argument("--service-samples", type=int, help="samples of the service's models")
    parser.add_argument("--service-deletions", type=int, help="deletions timed per family")
    args = parser.parse_args(argv)
    args.service_samples = args.service_samples or (48 if args.quick else 96)
    args.service_deletions = args.service_deletions or (5 if args.quick else 20)
    return args


def sizes_of(base: str, modality: Modality, args: argparse.Namespace) -> Sizes:
    table = QUICK if args.quick else FULL
    kind = "minilm" if base == "minilm" else str(modality)
    sizes = table[kind]
    return Sizes(
        train=args.train or sizes.train,
        test=args.test or sizes.test,
        epochs=sizes.epochs,
        learning_rate=sizes.learning_rate,
        max_length=sizes.max_length,
    )


def runs(args: argparse.Namespace) -> list[tuple[str, str]]:
    chosen = [f for f in args.families.split(",") if f]
    known = {family for family, _ in RUNS}
    unknown = sorted(set(chosen) - known)
    if unknown:
        raise SystemExit(
            f"unknown families: {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    return [
        (family, base)
        for family, base in RUNS
        if (not chosen or family in chosen) and not (base == "minilm" and args.no_minilm)
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every chosen family, one after the other; with ``--output`` the report so far is written
    after each (``complete`` false until the last), so a run cut short still leaves figures."""
    make_deterministic()
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = time.perf_counter()
    entries: list[dict[str, Any]] = []
    data: dict[tuple[str, Sizes], Data] = {}
    chosen = runs(args)

    def report() -> dict[str, Any]:
        return {
            "bench": "families",
            "complete": len(entries) == len(chosen),
            "setup": {
                "quick": args.quick,
                "threads": torch.get_num_threads(),
                "load_average_1min_before_after": [
                    round(load_before[0], 2),
                    round(os.getloadavg()[0], 2),
                ],
                "runtime": runtime_info(device),
                "s3t": {"n_shards": args.shards, "n_slices": args.slices, "budget": args.budget},
                "full_lora": "one shard, one slice, one order; LoRA on every adapted layer "
                "(baselines.full_config)",
                "deletion": "1 % of the training samples, drawn at random (seeded)",
                "service": SERVICE_SETUP if args.service else None,
            },
            "families": entries,
            "all_bitwise_exact": bool(entries) and all(e["bitwise_exact"] for e in entries),
            "seconds": round(time.perf_counter() - started, 1),
        }

    with tempfile.TemporaryDirectory(prefix="bench-families-") as name, ExitStack() as stack:
        tmp = Path(name)
        service = None
        if args.service:
            import families_service  # the service's dependencies only where it runs

            service = stack.enter_context(families_service.deployment(tmp / "service", args.device))
        for family, base in chosen:
            begun = time.perf_counter()
            entry = family_entry(family, base, tmp, args, device, service, data)
            entry["seconds"] = round(time.perf_counter() - begun, 1)
            entries.append(entry)
            if args.output:
                Path(args.output).write_text(json.dumps(report(), indent=2) + "\n", "utf-8")
    return report()


def family_entry(
    family: str,
    base: str,
    tmp: Path,
    args: argparse.Namespace,
    device: torch.device,
    service: Any,
    data: dict[tuple[str, Sizes], Data],
) -> dict[str, Any]:
    """One family's entry: the library's figures, then the service's; an error (a model that
    cannot be built or loaded here, a failed step) is recorded in the entry, not raised."""
    entry: dict[str, Any] = {"family": family, "base": base, "bitwise_exact": False}
    try:
        folder = base_folder(family, base, tmp, args)
        backbone = load_backbone(folder, device=device)
    except Exception as error:
        log(f"{family} ({base}): cannot load\n{traceback.format_exc()}")
        return {**entry, "error": f"{type(error).__name__}: {error}"}
    sizes = sizes_of(base, backbone.modality, args)
    modality = str(backbone.modality)
    if (modality, sizes) not in data:
        data[(modality, sizes)] = (
            image_data(sizes, args.seed)
            if backbone.modality == Modality.IMAGE
            else text_data(args.data, sizes, args.seed)
        )
    rows = data[(modality, sizes)]
    entry["modality"] = modality
    entry.update(
        guarded(
            f"{family} ({base})",
            partial(measure, family, base, backbone, rows, sizes, args, tmp / family / base),
        )
    )
    if "error" not in entry:
        log(
            f"{family} ({base}): exact {entry['bitwise_exact']}, accuracy "
            f"{entry['accuracy_s3t']} vs full {entry['accuracy_full_lora']}, retrain "
            f"share {entry['retrain_share_1pct']}"
        )
    if service is not None:
        log(f"{family} ({base}): through the service")
        figures = guarded(
            f"{family} ({base}) service",
            partial(measure_service, service, family, base, folder, rows, sizes, args),
        )
        entry.update(headline(figures, entry))
        entry["service"] = figures
    return entry


SERVICE_SETUP = (
    "the app in this process on SQLite, jobs run in this process on an engine catalogue; per "
    "family a model of the registered base model trained through the API, then single-sample "
    "deletions one at a time on the quiet service, the retrains run between them (untimed)"
)


def guarded(what: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()``, or an entry naming its error: one family's failure is a result, not the end of
    the run."""
    try:
        return fn()
    except Exception as error:
        log(f"{what}: failed\n{traceback.format_exc()}")
        return {"error": f"{type(error).__name__}: {error}"}


def headline(service: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """The service's figures an entry leads with, and their ratio to a full retrain (what a
    service without S3T keeps serving the deleted data for)."""
    if "deletion_202" not in service:
        return {}  # the service part failed: its error is in the entry's `service`
    clean = service["deletion_to_clean_prediction"]
    figures: dict[str, Any] = {
        "deletion_202": service["deletion_202"],
        "deletion_to_clean_prediction_ms": {k: clean[k] for k in ("p50_ms", "p99_ms")},
    }
    full_s = entry.get("training", {}).get("full_lora_seconds")
    if full_s and clean["p99_ms"] is not None:
        figures["clean_prediction_p99_over_full_lora_retrain"] = round(
            clean["p99_ms"] / 1000 / full_s, 5
        )
    return figures


def service_rows(data: Data, n: int) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """The API's samples of the first ``n`` training rows (texts, or images as base64), and the
    body of a prediction of one test row."""
    rows = []
    for i, (content, label) in enumerate(data.train[:n]):
        row = {"external_id": f"s{i:05d}", "label": data.labels[label]}
        rows.append({**row, **api_content(content)})
    probe = api_content(data.test[0][0])
    return rows, {f"{key}s": [value] for key, value in probe.items()}


def api_content(content: Content) -> dict[str, str]:
    if isinstance(content, str):
        return {"text": content}
    if isinstance(content, bytes):
        return {"image": base64.b64encode(content).decode("ascii")}
    raise ValueError("the families benchmark serves classifiers, not conversations")


def measure_service(
    service: Any,
    family: str,
    base: str,
    folder: Path,
    data: Data,
    sizes: Sizes,
    args: argparse.Namespace,
) -> dict[str, Any]:
    import families_service

    if base == "minilm":
        name = service.settings.default_base_model  # the deployment's default: MiniLM-L6
    else:
        name = f"{base}-{family}"
        families_service.register_base(service.settings, name, folder)
    rows, probe = service_rows(data, args.service_samples)
    settings = {
        "n_shards": args.shards,
        "n_slices": args.slices,
        "budget": args.budget,
        "placement": "sample",
        "lora_rank": args.rank,
        "epochs_per_stage": 1,
        "learning_rate": sizes.learning_rate,
        "batch_size": args.batch_size,
        "max_length": sizes.max_length,
        "seed": args.seed,
    }
    figures: dict[str, Any] = families_service.measure(
        service, family, name, list(data.labels), rows, probe, settings,
        deletions=args.service_deletions, seed=args.seed,
    )  # fmt: skip
    return figures


def main() -> None:
    args = parse_args()
    report = run(args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
