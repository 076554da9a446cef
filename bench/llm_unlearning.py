"""Exact unlearning of an instruction-tuned decoder, measured by what it memorised.

One run, offline, on the CPU by default:

1. The base: a toy Llama pre-trained here from scratch on AG News (``bench/llm_base.py``; a few
   CPU minutes, built once into ``var/llm-base``).
2. Instruction data: story-continuation pairs from AG News dealt to data subjects; a few subjects
   get a random canary (``my secret code is 4 8 1 9 3 7``) planted in several of their responses
   (``bench/llm_data.py``). Subjects are placed whole on one shard and slice, as the service's
   subject placement does.
3. S3T trains the model (decoder blocks from the top, LoRA on every attention and MLP projection,
   rank-stabilised). Then each canary subject is deleted **exactly**: the invalidated stages are
   retrained from the last valid one, subject after subject.
4. References: the same model trained from scratch without the canary subjects, over several
   seeds (seed 0 is the model's own seed): what "never saw them" looks like, and its spread.
5. Approximate passes on the trained model (gradient ascent, NPO, SSD) forgetting the same
   subjects' samples, as they would serve before the exact retrain lands; their cost is their
   time as a share of the exact retrains' time.

Figures per model: canary exposure (Carlini et al. 2019; rank among random secrets), verbatim
ROUGE-L (greedy continuation of the canary's prefix against its secret), a Min-K% Prob
membership-inference AUC (the forgotten subjects' samples against as many outsider subjects'
samples, canaries planted the same way but never trained on) and the held-out loss (test-split
pairs). ``exact.within_reference_noise`` is computed: every exact figure must lie within
the references' spread over seeds. ``bitwise_exact``: the retrained artifacts equal those of the
reference trained with the model's seed. Generation latency per token and tokens per second with
1 and 8 concurrent generations (interleaved a token at a time, as the service's per-step lock
serves them).

    python bench/llm_unlearning.py            # writes bench/results-llm-unlearning.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from llm_base import DEFAULT_DATA, DEFAULT_OUT, ensure_base  # noqa: E402
from llm_data import (  # noqa: E402
    assign_subjects,
    instruction_pairs,
    plant_canaries,
    read_agnews,
)

from unlearning.approx.prefix_pass import approximate_stages, examples_of  # noqa: E402
from unlearning.artifacts import LocalArtifactStore  # noqa: E402
from unlearning.evaluation.memorization import (  # noqa: E402
    CANARY_PREFIX,
    auc,
    canary_secret,
    canary_space_size,
    candidate_canaries,
    exposure,
    min_k_percent,
    rouge_l,
)
from unlearning.families import Conversation  # noqa: E402
from unlearning.families.chat import render_ids  # noqa: E402
from unlearning.s3t import (  # noqa: E402
    Backbone,
    Generation,
    ModelSpec,
    S3TConfig,
    S3TEngine,
    Sampling,
    SequenceKey,
    TrainingSample,
    load_backbone,
)
from unlearning.s3t.generation import LmEnsemble, prompt_ids  # noqa: E402
from unlearning.sharding import assign  # noqa: E402

OUT = ROOT / "bench" / "results-llm-unlearning.json"
METRICS = ("canary_exposure", "verbatim_rouge_l", "mink_mia_auc")
APPROXIMATE = ("gradient_ascent", "npo", "ssd")

Prefixes = dict[int, list[str]]
#: Tokens of a rendered sample (the instruction template adds about 20 to a pair's 38).
MAX_LENGTH = 64


@dataclass(frozen=True)
class Settings:
    subjects: int = 40
    pairs_per_subject: int = 8
    canary_subjects: int = 4
    copies: int = 4
    digits: int = 6
    candidates: int = 1000
    heldout: int = 48
    reference_seeds: int = 3
    epochs: int = 8
    learning_rate: float = 3e-3
    latency_tokens: int = 24
    seed: int = 0

    @classmethod
    def quick(cls) -> Settings:
        return cls(subjects=16, pairs_per_subject=6, canary_subjects=2, copies=3,
                   candidates=200, heldout=16, reference_seeds=2, epochs=3,
                   latency_tokens=8)  # fmt: skip


def s3t_config(backbone: Backbone, settings: Settings, seed: int) -> S3TConfig:
    return S3TConfig(
        n_shards=2, n_slices=2, budget=2, task="causal_lm", n_labels=1,  # type: ignore[arg-type]
        lora_rank=8, lora_alpha=16.0, use_rslora=True,
        target_modules=backbone.family.default_targets,
        epochs_per_stage=settings.epochs, learning_rate=settings.learning_rate,
        batch_size=16, max_length=MAX_LENGTH, seed=seed,
    )  # fmt: skip


@dataclass(frozen=True)
class Corpus:
    samples: list[TrainingSample]  # what the model trains on
    subject_of: dict[str, str]  # sample id -> subject
    canaries: dict[str, list[str]]  # forgotten subject -> its canaries
    canary_samples: dict[str, list[TrainingSample]]  # canary -> the samples holding it
    outsiders: list[TrainingSample]  # subjects never trained on, canaries planted the same way
    heldout: list[tuple[str, str]]  # test-split pairs: the held-out loss

    def without(self, subjects: Sequence[str]) -> list[TrainingSample]:
        gone = set(subjects)
        return [s for s in self.samples if self.subject_of[s.id] not in gone]

    def of(self, subjects: Sequence[str]) -> list[TrainingSample]:
        wanted = set(subjects)
        return [s for s in self.samples if self.subject_of[s.id] in wanted]


def rendered_length(tokenizer: Any) -> Callable[[str, str], int]:
    """A pair's tokens as the model sees it: rendered with the instruction template."""

    def count(prompt: str, response: str) -> int:
        return len(render_ids(tokenizer, Conversation.pair(prompt, response))[0])

    return count


def build_corpus(settings: Settings, data: Path, config: S3TConfig, tokenizer: Any) -> Corpus:
    """Subjects' pairs with canaries planted in the ones to forget and in as many outsiders
    (same format, never trained on: the non-members of the membership inference)."""
    train = read_agnews(data / "train.tsv")
    test = read_agnews(data / "test.tsv")
    n_subjects = settings.subjects + settings.canary_subjects
    count = n_subjects * settings.pairs_per_subject
    pairs = instruction_pairs(
        [t for t, _ in train], [lab for _, lab in train], count, seed=1,
        token_count=rendered_length(tokenizer), max_tokens=MAX_LENGTH,
    )  # fmt: skip
    dealt = assign_subjects(pairs, n_subjects, seed=2)
    named = sorted(dealt)
    forgotten = named[: settings.canary_subjects]
    outside = set(named[settings.canary_subjects : 2 * settings.canary_subjects])
    planted = plant_canaries(
        dealt, forgotten + sorted(outside), 1, settings.copies, seed=3, digits=settings.digits
    )
    samples: list[TrainingSample] = []
    outsiders: list[TrainingSample] = []
    subject_of: dict[str, str] = {}
    canary_samples: dict[str, list[TrainingSample]] = {}
    for subject, subject_pairs in sorted(planted.pairs_by_subject.items()):
        shard, slice_ = assign("llm-bench", subject, config.n_shards, config.n_slices)
        for index, (prompt, response) in enumerate(subject_pairs):
            sample = TrainingSample(
                f"{subject}/{index:02d}", shard, slice_, Conversation.pair(prompt, response)
            )
            subject_of[sample.id] = subject
            (outsiders if subject in outside else samples).append(sample)
            for canary in planted.canaries.get(subject, []):
                if canary in response:
                    canary_samples.setdefault(canary, []).append(sample)
    heldout = instruction_pairs(
        [t for t, _ in test], [lab for _, lab in test], settings.heldout, seed=4,
        token_count=rendered_length(tokenizer), max_tokens=MAX_LENGTH,
    )  # fmt: skip
    canaries = {subject: planted.canaries[subject] for subject in forgotten}
    return Corpus(samples, subject_of, canaries, canary_samples, outsiders, heldout)


def full_prefixes(layers: Sequence[Any], n_shards: int) -> Prefixes:
    """Sequence 0's stages of every shard, in stage order."""
    return {
        shard: [
            x.artifact
            for x in sorted(layers, key=lambda x: x.stage)
            if x.shard == shard and x.sequence == 0
        ]
        for shard in range(n_shards)
    }


class Meter:
    """The figures of one served model."""

    def __init__(self, engine: S3TEngine, config: S3TConfig, corpus: Corpus, settings: Settings):
        self.engine, self.config, self.corpus, self.settings = engine, config, corpus, settings
        rng = np.random.default_rng(settings.seed + 99)
        self.candidates = {
            canary: candidate_canaries(rng, canary, settings.candidates)
            for canaries in corpus.canaries.values()
            for canary in canaries
        }

    def measure(self, prefixes: Prefixes, forgotten: Sequence[str]) -> dict[str, float]:
        lm = self.engine.lm(self.config, prefixes)
        exposures, rouges = [], []
        for subject in forgotten:
            for canary in self.corpus.canaries[subject]:
                sample = self.corpus.canary_samples[canary][0]
                conversation = sample.content
                assert isinstance(conversation, Conversation)
                prompt, response = conversation.messages[0][1], conversation.messages[1][1]
                before = response[: response.index(canary)]
                texts = [before + c for c in [canary, *self.candidates[canary]]]
                scores = lm.score([Conversation.prompt(prompt)] * len(texts), texts)
                totals = [s.total for s in scores]
                exposures.append(
                    exposure(totals[0], totals[1:], canary_space_size(self.settings.digits))
                )
                rouges.append(self._verbatim(lm, prompt, before, canary))
        members = [self._mink(lm, s.content) for s in self.corpus.of(forgotten)]
        outsiders = [self._mink(lm, Conversation.pair(p, r)) for p, r in self.corpus.heldout]
        return {
            "canary_exposure": float(np.mean(exposures)),
            "verbatim_rouge_l": float(np.mean(rouges)),
            "mink_mia_auc": auc(members, outsiders),
            "heldout_loss": self.heldout_loss(lm),
        }

    def _verbatim(self, lm: LmEnsemble, prompt: str, before: str, canary: str) -> float:
        tokenizer = self.engine.backbone.processor
        lead = before + CANARY_PREFIX
        secret = canary_secret(canary)
        ids = prompt_ids(tokenizer, Conversation.prompt(prompt))
        ids += tokenizer(lead, add_special_tokens=False)["input_ids"]
        budget = len(tokenizer(" " + secret, add_special_tokens=False)["input_ids"])
        generation = Generation(lm, ids, Sampling())
        tokens = [generation.accept() for _ in range(budget)]
        continued = tokenizer.decode(tokens, skip_special_tokens=True).split()
        return rouge_l(secret.split(), continued)

    def _mink(self, lm: LmEnsemble, content: Any) -> float:
        prompt, response = content.messages[0][1], content.messages[1][1]
        scored = lm.score([Conversation.prompt(prompt)], [response])[0]
        return float(min_k_percent(scored.logprobs, 0.2))

    def heldout_loss(self, lm: LmEnsemble) -> float:
        prompts = [Conversation.prompt(p) for p, _ in self.corpus.heldout]
        scored = lm.score(prompts, [r for _, r in self.corpus.heldout])
        tokens = sum(len(s.logprobs) for s in scored)
        return -sum(s.total for s in scored) / tokens


def train(
    backbone: Backbone, folder: Path, config: S3TConfig, samples: Sequence[TrainingSample]
) -> tuple[S3TEngine, list[Any], float]:
    engine = S3TEngine(backbone, LocalArtifactStore(folder))
    started = time.perf_counter()
    layers = engine.train(ModelSpec.plan(config), samples)
    return engine, layers, time.perf_counter() - started


def delete_exactly(
    engine: S3TEngine,
    config: S3TConfig,
    layers: list[Any],
    remaining: Sequence[TrainingSample],
    deleted: Sequence[TrainingSample],
) -> tuple[list[Any], float]:
    """Retrain every sequence the deleted samples invalidated, from its last valid stage."""
    spec = ModelSpec.plan(config)
    current = {(x.shard, x.sequence, x.stage): x for x in layers}
    started = time.perf_counter()
    for key, first in engine.affected_stages(spec, [(s.shard, s.slice) for s in deleted]).items():
        prefix = [current[(key.shard, key.sequence, st)].artifact for st in range(1, first)]
        shard_samples = [s for s in remaining if s.shard == key.shard]
        for layer in engine.retrain(spec, SequenceKey(*key), first, shard_samples, prefix):
            current[(layer.shard, layer.sequence, layer.stage)] = layer
    return list(current.values()), time.perf_counter() - started


def approximate(
    engine: S3TEngine,
    config: S3TConfig,
    layers: list[Any],
    corpus: Corpus,
    forgotten: Sequence[str],
    method: str,
) -> tuple[Prefixes, float]:
    """The served prefixes after one approximate pass per affected shard (sequence 0)."""
    spec = ModelSpec.plan(config)
    prefixes = full_prefixes(layers, config.n_shards)
    forget = corpus.of(forgotten)
    started = time.perf_counter()
    for shard in sorted({s.shard for s in forget}):
        order = spec.orders[0]
        first = min(order.index(s.slice) for s in forget if s.shard == shard)
        stages = [engine.load_stage(ref) for ref in prefixes[shard]]
        retain = [
            s
            for s in corpus.samples
            if s.shard == shard and corpus.subject_of[s.id] not in forgotten
        ]
        edited = approximate_stages(
            engine.backbone, config, stages, first,
            examples_of(engine.backbone, config, [s for s in forget if s.shard == shard]),
            examples_of(engine.backbone, config, retain), method,
        )  # fmt: skip
        prefixes[shard] = prefixes[shard][:first] + [
            engine.store.put(stage.to_bytes()) for stage in edited
        ]
    return prefixes, time.perf_counter() - started


def latency(engine: S3TEngine, config: S3TConfig, prefixes: Prefixes, prompts: Sequence[str],
            concurrent: int, tokens: int) -> dict[str, float]:  # fmt: skip
    """Per-token latency seen by each request and total tokens per second, ``concurrent``
    generations interleaved a token at a time."""
    tokenizer = engine.backbone.processor
    lm = engine.lm(config, prefixes)
    generations = [
        Generation(lm, prompt_ids(tokenizer, Conversation.prompt(p)), Sampling(1.0, seed=i))
        for i, p in enumerate(prompts[:concurrent])
    ]
    gaps: list[float] = []
    last = [time.perf_counter()] * concurrent
    started = last[0]
    for _ in range(tokens):
        for index, generation in enumerate(generations):
            generation.accept()
            now = time.perf_counter()
            gaps.append(now - last[index])
            last[index] = now
    elapsed = time.perf_counter() - started
    ordered = sorted(gaps)
    return {
        "concurrent": concurrent,
        "token_latency_p50_ms": 1000 * ordered[len(ordered) // 2],
        "token_latency_p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "tokens_per_second": concurrent * tokens / elapsed,
    }


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def spread(values: Sequence[float]) -> dict[str, float]:
    return {
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
        "stdev": statistics.pstdev(values),
    }


def run(
    settings: Settings, base_folder: Path, data: Path, methods: Sequence[str]
) -> dict[str, Any]:
    started_all = time.perf_counter()
    base = ensure_base(base_folder, data=data)
    backbone = load_backbone(base)
    config = s3t_config(backbone, settings, settings.seed)
    corpus = build_corpus(settings, data, config, backbone.processor)
    forgotten = sorted(corpus.canaries)
    result: dict[str, Any] = {"settings": settings.__dict__, "base": str(base.name)}

    with TemporaryDirectory() as scratch:
        root = Path(scratch)
        log(f"training on {len(corpus.samples)} samples")
        engine, layers, train_s = train(backbone, root / "model", config, corpus.samples)
        log(f"trained in {train_s:.0f} s; measuring")
        meter = Meter(engine, config, corpus, settings)
        before = meter.measure(full_prefixes(layers, config.n_shards), forgotten)

        # Exact: subject after subject, each retrain from the last valid stage.
        current, retrain_s = layers, 0.0
        remaining = list(corpus.samples)
        for subject in forgotten:
            deleted = [s for s in remaining if corpus.subject_of[s.id] == subject]
            remaining = [s for s in remaining if corpus.subject_of[s.id] != subject]
            current, seconds = delete_exactly(engine, config, current, remaining, deleted)
            retrain_s += seconds
        log(f"exact deletions retrained in {retrain_s:.0f} s; measuring")
        exact = meter.measure(full_prefixes(current, config.n_shards), forgotten)

        # References: trained from scratch without the subjects, over seeds.
        references, reference_digests = [], None
        for seed in range(settings.reference_seeds):
            cfg = s3t_config(backbone, settings, settings.seed + seed)
            ref_engine, ref_layers, _ = train(
                backbone, root / f"ref{seed}", cfg, corpus.without(forgotten)
            )
            references.append(Meter(ref_engine, cfg, corpus, settings).measure(
                full_prefixes(ref_layers, cfg.n_shards), forgotten))  # fmt: skip
            if seed == 0:
                reference_digests = {(x.shard, x.sequence, x.stage): x.artifact for x in ref_layers}
        exact_digests = {(x.shard, x.sequence, x.stage): x.artifact for x in current}

        passes: dict[str, Any] = {}
        for method in methods:
            log(f"approximate pass: {method}")
            prefixes, seconds = approximate(engine, config, layers, corpus, forgotten, method)
            figures = meter.measure(prefixes, forgotten)
            figures["seconds"] = seconds
            figures["cost_share_of_exact_retrain"] = seconds / retrain_s
            passes[method] = figures

        log("generation latency")
        prompts = [p for p, _ in corpus.heldout]
        served = full_prefixes(current, config.n_shards)
        result["generation"] = [
            latency(engine, config, served, prompts, n, settings.latency_tokens) for n in (1, 8)
        ]

    reference = {m: spread([r[m] for r in references]) for m in (*METRICS, "heldout_loss")}
    inside = {m: reference[m]["min"] <= exact[m] <= reference[m]["max"] for m in METRICS}
    result.update(
        {
            "bitwise_exact": exact_digests == reference_digests,
            "train_seconds": train_s,
            "exact_retrain_seconds": retrain_s,
            "before": before,
            "exact": {
                **exact,
                "within_reference_noise": all(inside.values()),
                "inside_reference_spread": inside,
                "heldout_loss_change": exact["heldout_loss"] / before["heldout_loss"] - 1,
            },
            "reference": {**reference, "seeds": references},
            "memorised_before": {
                m: before[m] > reference[m]["max"] for m in ("canary_exposure", "mink_mia_auc")
            },
            **passes,
            "seconds": time.perf_counter() - started_all,
            "machine": {
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "cpu": platform.processor() or platform.machine(),
            },
        }
    )
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run (seconds), not saved")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--base", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--methods", default=",".join(APPROXIMATE), help="approximate passes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = Settings.quick() if args.quick else Settings()
    methods = [m for m in args.methods.split(",") if m]
    result = run(settings, args.base, args.data, methods)
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if not args.quick:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
