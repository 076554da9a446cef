"""A base model held in half precision (bfloat16, float16) on the CPU: it trains, retrains
bitwise-exactly and serves, with float32 adapters and heads; int8 is refused where bitsandbytes
is absent. (On CUDA: tests/gpu/test_decoders_cuda.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.unit.families.test_family_exactness import (
    Unlearned,
    outputs,
    samples_for,
    train_delete_retrain,
)
from unlearning.approx import PrefixModel, registry
from unlearning.approx.prefix_pass import examples_of
from unlearning.approx.registry import PassData
from unlearning.families import Conversation
from unlearning.precision import PrecisionError, int8_available
from unlearning.s3t import Generation, S3TEngine, Sampling, load_backbone
from unlearning.s3t.data import CachedHiddenStates
from unlearning.s3t.generation import prompt_ids
from unlearning.s3t.weights import StageWeights


def _fp16_matmul_on_cpu() -> bool:
    try:
        torch.ones(2, 2, dtype=torch.float16) @ torch.ones(2, 2, dtype=torch.float16)
    except RuntimeError:
        return False
    return True


@pytest.fixture(scope="module")
def half_runs(
    family_folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Unlearned]:
    """A tiny llama (causal LM) and BERT (classifier) on a bfloat16 base: trained, a deletion
    retrained, and trained afresh without it."""
    runs = {}
    for family in ("llama", "bert"):
        backbone = load_backbone(family_folders[family], "cpu", "bfloat16")
        runs[family] = train_delete_retrain(backbone, tmp_path_factory.mktemp(family))
    return runs


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_a_bf16_base_retrains_bitwise_exactly(half_runs: dict[str, Unlearned], family: str) -> None:
    run = half_runs[family]
    backbone = run.engine.backbone
    assert {p.dtype for p in backbone.model.parameters()} == {torch.bfloat16}
    assert backbone.compute_profile.endswith("-bf16")

    assert run.retrained == run.fresh  # the same artifact hashes: bitwise equal weights
    assert run.retrained[(0, 0, 1)] != run.trained[(0, 0, 1)]
    stage = StageWeights.from_bytes(run.engine.store.get(run.retrained[(0, 0, 1)]))
    assert {t.dtype for pair in stage.adapters.values() for t in (pair.a, pair.b)} == {
        torch.float32
    }
    served = {shard: [run.retrained[(shard, 0, s)] for s in (1, 2)] for shard in (0, 1)}
    answered = outputs(run.engine, run.config, served)
    assert answered.dtype == torch.float32 and torch.isfinite(answered).all()
    assert torch.equal(answered, outputs(run.fresh_engine, run.config, served))


def test_a_bf16_base_serves_what_float32_serves_within_its_rounding(
    family_folders: dict[str, Path], half_runs: dict[str, Unlearned]
) -> None:
    run = half_runs["llama"]
    half = run.engine.backbone
    served = {shard: [run.retrained[(shard, 0, s)] for s in (1, 2)] for shard in (0, 1)}
    full = S3TEngine(load_backbone(family_folders["llama"]), run.engine.store)
    on_half, on_full = outputs(run.engine, run.config, served), outputs(full, run.config, served)
    # bfloat16 keeps 8 bits of mantissa: log-probabilities agree to a few hundredths of a nat.
    assert torch.allclose(on_half, on_full, atol=0.15), (on_half - on_full).abs().max()
    assert not torch.equal(on_half, on_full)  # and the precision does change the bits

    # A KV-cached generation on the half-precision base picks, at every step, a token that
    # recomputing every token rates best within bfloat16's rounding: the cache sums in another
    # order, so where two tokens tie to within it (this random model has such ties, and which
    # wins depends on the CPU's thread count) either may come first.
    lm = run.engine.lm(run.config, served)
    prompt = prompt_ids(half.processor, Conversation.prompt("tell me about bank"))
    generation = Generation(lm, prompt, Sampling())
    tokens = [generation.accept() for _ in range(6)]
    ids = torch.tensor([prompt + tokens])
    full_pass = lm._logprobs(ids, torch.ones_like(ids))[0, len(prompt) - 1 :]
    gaps = [float(full_pass[i].max() - full_pass[i, token]) for i, token in enumerate(tokens)]
    assert max(gaps) < 0.05, gaps


def test_the_frozen_bottom_cache_holds_the_base_dtype(family_folders: dict[str, Path]) -> None:
    half = load_backbone(family_folders["llama"], "cpu", "bfloat16")
    encoded = half.encode(["bank profit", "team goal season"], 16)
    cache = CachedHiddenStates(half, encoded, {2})
    states = cache.at(2, torch.arange(2))
    assert states.dtype == torch.bfloat16
    assert torch.equal(states, half.hidden_at(encoded, 2))


@pytest.mark.skipif(not _fp16_matmul_on_cpu(), reason="this torch has no float16 CPU kernels")
def test_a_float16_base_loads_scores_and_generates_on_the_cpu(
    family_folders: dict[str, Path], half_runs: dict[str, Unlearned]
) -> None:
    backbone = load_backbone(family_folders["llama"], "cpu", "float16")
    assert {p.dtype for p in backbone.model.parameters()} == {torch.float16}
    assert backbone.compute_profile.endswith("-fp16")
    assert backbone.memory_bytes < 0.6 * load_backbone(family_folders["llama"]).memory_bytes
    # Float32 adapters trained on another profile (bf16) serve here; they are not retrained.
    run = half_runs["llama"]
    engine = S3TEngine(backbone, run.engine.store)
    served = {shard: [run.retrained[(shard, 0, s)] for s in (1, 2)] for shard in (0, 1)}
    out = engine.generate(
        run.config, served, Conversation.prompt("tell me about bank"), max_new_tokens=4
    )
    assert 1 <= len(out.token_ids) <= 4
    scores = outputs(engine, run.config, served)
    assert torch.isfinite(scores).all()
    assert torch.allclose(scores, outputs(run.engine, run.config, served), atol=0.15)


@pytest.mark.skipif(int8_available(), reason="checks the refusal where bitsandbytes is absent")
def test_int8_is_refused_where_bitsandbytes_is_absent(family_folders: dict[str, Path]) -> None:
    with pytest.raises(PrecisionError, match="'int8' needs bitsandbytes"):
        load_backbone(family_folders["llama"], "cpu", "int8")


def test_an_unknown_precision_is_refused(family_folders: dict[str, Path]) -> None:
    with pytest.raises(PrecisionError, match="precision must be one of"):
        load_backbone(family_folders["llama"], "cpu", "bf16")


def test_float32_is_the_default_and_the_bare_profile(family_folders: dict[str, Path]) -> None:
    backbone = load_backbone(family_folders["llama"])
    assert backbone.precision == "float32" and backbone.dtype == torch.float32
    assert not backbone.compute_profile.endswith(("-bf16", "-fp16", "-int8"))


@pytest.mark.parametrize("method", ["gradient_ascent", "ssd"])
def test_approximate_passes_run_on_a_bf16_base(
    half_runs: dict[str, Unlearned], method: str
) -> None:
    run = half_runs["llama"]
    backbone, config = run.engine.backbone, run.config
    stages = [run.engine.load_stage(run.retrained[(0, 0, s)]) for s in (1, 2)]
    model = PrefixModel(backbone, stages, editable=(1,), target_modules=config.target_modules)
    shard = [s for s in samples_for(backbone, config) if s.shard == 0]
    forget, retain = (
        examples_of(backbone, config, shard[:2]),
        examples_of(backbone, config, shard[2:]),
    )
    spec = registry.get(method)
    spec.run(model, PassData(forget, retain, None, 1), spec.configure())
    _, second = model.export()
    edited = [t for pair in second.adapters.values() for t in (pair.a, pair.b)]
    assert {t.dtype for t in edited} == {torch.float32}
    assert all(torch.isfinite(t).all() for t in edited)
    assert any(
        not torch.equal(pair.a, stages[1].adapters[key].a)
        or not torch.equal(pair.b, stages[1].adapters[key].b)
        for key, pair in second.adapters.items()
    )
