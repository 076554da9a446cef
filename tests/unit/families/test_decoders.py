"""Decoder families: block-by-block logits equal the model's own, instruction samples put only
response tokens in the loss, and the ensemble scores and generates as one model (a KV-cached
token equals a full recomputation; a rebased generation continues from the new layers)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from tests.unit.families.test_family_exactness import family_config, samples_for
from unlearning.artifacts import LocalArtifactStore
from unlearning.families import Conversation, family_of
from unlearning.families.chat import render_ids
from unlearning.families.testing import DECODER_FAMILIES, save_tiny_model, tiny_config
from unlearning.s3t import (
    Backbone,
    Generation,
    ModelSpec,
    S3TConfig,
    S3TEngine,
    Sampling,
    load_backbone,
)
from unlearning.s3t.data import IGNORE, next_token_labels
from unlearning.s3t.ensemble import EnsemblePredictor, ServedShard
from unlearning.s3t.generation import LmEnsemble, StopText, prompt_ids
from unlearning.s3t.targets import adapter_keys

PAIR = Conversation.pair("what moves the market", "bank profit 12")


@pytest.mark.parametrize("family", [*DECODER_FAMILIES, "qwen2"])
def test_blockwise_logits_equal_the_models_own(tmp_path: Path, family: str) -> None:
    backbone = load_backbone(save_tiny_model(family, tmp_path / family))
    expected = {"qwen3": "qwen2"}.get(family, family)
    assert backbone.causal and backbone.family.name == expected
    inputs = torch.tensor([[101, 2054, 2003, 2039, 102, 0], [101, 7592, 2088, 102, 0, 0]])
    mask = (torch.arange(6) < torch.tensor([[5], [4]])).long()
    hidden = backbone.run(backbone.embed_tokens(inputs, 0), mask, 0, backbone.n_layers)
    split = backbone.run(
        backbone.run(backbone.embed_tokens(inputs, 0), mask, 0, 1), mask, 1, backbone.n_layers
    )
    assert torch.equal(hidden, split)
    with torch.no_grad():
        theirs = backbone.model(input_ids=inputs, attention_mask=mask).logits
    real = mask.bool()
    assert torch.allclose(backbone.logits(hidden)[real], theirs[real], atol=1e-5)


@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_default_targets_are_every_attention_and_mlp_projection(
    backbones: dict[str, Backbone], family: str
) -> None:
    backbone = backbones[family]
    for block in backbone.layers:
        projections = {
            path.rsplit(".", 1)[-1]
            for path, module in block.named_modules()
            if isinstance(module, (nn.Linear, Conv1D))
        }
        assert projections == set(backbone.family.default_targets) & projections
        assert projections <= set(backbone.family.default_targets), family


def test_sliding_window_variants_of_qwen_are_refused() -> None:
    config = tiny_config("qwen2")
    config.use_sliding_window = True
    with pytest.raises(ValueError, match="use_sliding_window"):
        family_of(config)


def test_only_response_tokens_are_in_the_loss(backbones: dict[str, Backbone]) -> None:
    tokenizer = backbones["llama"].processor
    ids, mask = render_ids(tokenizer, PAIR)
    response = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert response == "bank profit 12 [SEP]"
    assert "market" in tokenizer.decode(ids) and "market" not in response
    encoded = backbones["llama"].encode([PAIR, "a plain text"], 32)
    labels = next_token_labels(encoded)
    # A response's tokens are predicted from the position before them; nothing after the end.
    in_loss = labels[0] != IGNORE
    assert in_loss.sum() == sum(mask)
    assert torch.equal(
        labels[0][in_loss], torch.tensor([i for i, m in zip(ids, mask, strict=True) if m])
    )
    assert (labels[1] != IGNORE).sum() == encoded.attention_mask[1].sum() - 1


def test_a_chat_template_renders_turn_by_turn(backbones: dict[str, Backbone]) -> None:
    tokenizer = backbones["llama"].processor
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|> {% endif %}"
    )
    try:
        chat = Conversation(
            (("system", "be brief"), ("user", "hi"), ("assistant", "hello"),
             ("user", "bye"), ("assistant", "ciao"))
        )  # fmt: skip
        ids, mask = render_ids(tokenizer, chat)
        answered = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
        assert "hello" in answered and "ciao" in answered
        assert "hi" not in answered.split() and "assistant" not in answered
        prompt = tokenizer.decode(prompt_ids(tokenizer, Conversation.prompt("hi")))
        assert prompt.rstrip().endswith("assistant | >")
    finally:
        tokenizer.chat_template = None


@pytest.fixture(scope="module")
def trained(
    backbones: dict[str, Backbone], tmp_path_factory: pytest.TempPathFactory
) -> tuple[S3TEngine, S3TConfig, dict[int, list[str]], dict[int, list[str]]]:
    """A tiny Llama trained on two shards; both sequences' full prefixes."""
    backbone = backbones["llama"]
    config = replace(family_config(backbone), epochs_per_stage=6, learning_rate=2e-2)
    engine = S3TEngine(backbone, LocalArtifactStore(tmp_path_factory.mktemp("lm")))
    layers = engine.train(ModelSpec.plan(config), samples_for(backbone, config))
    prefixes = [
        {s: [x.artifact for x in layers if x.shard == s and x.sequence == q] for s in (0, 1)}
        for q in (0, 1)
    ]
    return engine, config, prefixes[0], prefixes[1]


def test_training_teaches_the_responses(
    trained: tuple[S3TEngine, S3TConfig, dict[int, list[str]], dict[int, list[str]]],
    backbones: dict[str, Backbone],
) -> None:
    engine, config, served, _ = trained
    seen = samples_for(backbones["llama"], config)[:6]
    prompts = [Conversation((s.content.messages[0],)) for s in seen]  # type: ignore[union-attr]
    responses = [s.content.messages[1][1] for s in seen]  # type: ignore[union-attr]
    after = [s.total for s in engine.lm(config, served).score(prompts, responses)]
    # The plain base model: one "shard" with no adapter.
    hidden = engine.backbone.hidden_size
    plain = ServedShard({}, torch.zeros(0, hidden), torch.zeros(0))
    base = LmEnsemble(engine.backbone, EnsemblePredictor(engine.backbone, ()), [plain])
    before = [s.total for s in base.score(prompts, responses)]
    gains = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(gains) / len(gains) > 1.0, gains  # nats per response, on average


def test_a_cached_generation_equals_recomputing_every_token(
    trained: tuple[S3TEngine, S3TConfig, dict[int, list[str]], dict[int, list[str]]],
) -> None:
    engine, config, served, _ = trained
    prompt = prompt_ids(engine.backbone.processor, Conversation.prompt("tell me about bank"))
    # Every stage (adapters from layer 0 up), and stage 1 only: a frozen bottom with its own cache.
    for prefixes in (served, {shard: refs[:1] for shard, refs in served.items()}):
        lm = engine.lm(config, prefixes)
        generation = Generation(lm, prompt, Sampling())
        tokens = [generation.accept() for _ in range(6)]
        ids = torch.tensor([prompt + tokens])
        full = lm._logprobs(ids, torch.ones_like(ids))
        assert tokens == [int(full[0, len(prompt) - 1 + i].argmax()) for i in range(6)]


def test_seeded_sampling_repeats_and_rebasing_continues_from_the_new_layers(
    trained: tuple[S3TEngine, S3TConfig, dict[int, list[str]], dict[int, list[str]]],
) -> None:
    engine, config, first, second = trained
    prompt = prompt_ids(engine.backbone.processor, Conversation.prompt("tell me about goal"))
    sampling = Sampling(temperature=1.5, seed=11)

    def run(steps: int, rebase_at: int | None = None) -> list[int]:
        generation = Generation(engine.lm(config, first), prompt, sampling)
        for step in range(steps):
            if step == rebase_at:
                generation.rebase(engine.lm(config, second))
            generation.accept()
        return generation.generated

    assert run(8) == run(8)
    other = Generation(engine.lm(config, first), prompt, Sampling(1.5, seed=12))
    assert run(8) != [other.accept() for _ in range(8)]
    rebased = run(8, rebase_at=4)
    continued = Generation(engine.lm(config, second), prompt, sampling)
    continued.generated = list(rebased[:4])
    assert [continued.accept() for _ in range(4)] == rebased[4:]


def test_stop_strings_cut_the_text_and_hold_back_what_may_start_one(
    backbones: dict[str, Backbone],
) -> None:
    tokenizer = backbones["llama"].processor
    ids = tokenizer("bank profit rose end of story today", add_special_tokens=False)["input_ids"]
    stop = StopText(tokenizer, ("end of story",))
    pieces = [stop.piece(ids[: i + 1]) for i in range(len(ids))]
    assert "".join(pieces) == "bank profit rose " and stop.stopped
    assert "end" not in "".join(pieces)
    plain = StopText(tokenizer, ())
    assert "".join(plain.piece(ids[: i + 1]) for i in range(len(ids))) + plain.flush(ids) == (
        tokenizer.decode(ids)
    )


def test_generate_stops_at_the_token_budget(
    trained: tuple[S3TEngine, S3TConfig, dict[int, list[str]], dict[int, list[str]]],
) -> None:
    engine, config, served, _ = trained
    prompt = Conversation.prompt("tell me about bank")
    out = engine.generate(config, served, prompt, max_new_tokens=3)
    assert len(out.token_ids) <= 3 and out.finish_reason in ("length", "eos", "stop")
    with pytest.raises(ValueError, match="scores and generates"):
        engine.predict(config, ["a text"], served)


def test_adapter_keys_tell_apart_modules_sharing_a_name() -> None:
    keys = adapter_keys(["attn.c_attn", "attn.c_proj", "mlp.c_proj", "mlp.c_fc"])
    assert keys == {
        "attn.c_attn": "c_attn", "attn.c_proj": "attn.c_proj", "mlp.c_proj": "mlp.c_proj",
        "mlp.c_fc": "c_fc",
    }  # fmt: skip
    assert adapter_keys(["attention.self.query", "attention.self.value"]) == {
        "attention.self.query": "query", "attention.self.value": "value",
    }  # fmt: skip


def test_rank_stabilised_lora_is_what_peft_applies(
    backbones: dict[str, Backbone], tmp_path: Path
) -> None:
    backbone = backbones["llama"]
    config = replace(family_config(backbone), use_rslora=True, lora_rank=4, lora_alpha=8.0)
    engine = S3TEngine(backbone, LocalArtifactStore(tmp_path))
    layers = engine.train(ModelSpec.plan(config), samples_for(backbone, config, count=8))
    assert engine.load_stage(layers[0].artifact).scaling == config.lora_scaling == 4.0
