"""bench/llm_base.py on a tiny variant and synthetic texts: the saved base loads offline with the
Auto classes, canaries tokenise one token per digit, the build is reproducible and
``ensure_base`` builds only when the folder holds no finished build."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from unlearning.evaluation.memorization import (
    CANARY_PREFIX,
    candidate_canaries,
    random_canary,
)

BENCH = Path(__file__).resolve().parents[2] / "bench" / "llm_base.py"

WORDS = [
    "the",
    "a",
    "market",
    "team",
    "said",
    "rose",
    "fell",
    "shares",
    "game",
    "won",
    "lost",
    "government",
    "new",
    "year",
    "police",
]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_llm_base", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = _bench()


def _texts(count: int, seed: int) -> list[str]:
    """Sentences of a small vocabulary with numbers in them (every digit, with and without a
    leading space)."""
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(count):
        words = [str(w) for w in rng.choice(WORDS, size=8)]
        words.insert(int(rng.integers(0, 8)), str(int(rng.integers(0, 100_000))))
        texts.append(" ".join(words) + f" {rng.integers(0, 10)}%.")
    return texts


TINY = dataclasses.replace(
    bench.BaseConfig(),
    vocab_size=400,
    hidden=32,
    layers=1,
    heads=2,
    kv_heads=1,
    intermediate=64,
    max_positions=64,
    steps=30,
    batch_size=8,
    seq_len=16,
    lr=1e-2,
    warmup=3,
)


def _build(out: Path) -> dict[str, Any]:
    info: dict[str, Any] = bench.build_base(
        out, texts=_texts(300, 0), eval_texts=_texts(40, 1), config=TINY
    )
    return info


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("llm") / "base"
    return out, _build(out)


def test_the_base_loads_offline_with_the_auto_classes(built: tuple[Path, dict[str, Any]]) -> None:
    folder, info = built
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert model.config.model_type == "llama"
    assert model.dtype == torch.float32
    assert model.config.tie_word_embeddings
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (32, 1)
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.eos_token == "<|eos|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.vocab_size == len(tokenizer)
    assert (folder / "model.safetensors").is_file()
    assert json.loads((folder / "build_info.json").read_text()) == info
    batch = tokenizer(["the market rose 5%."], return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (1, batch["input_ids"].shape[1], len(tokenizer))


def test_pre_training_lowers_the_heldout_loss(built: tuple[Path, dict[str, Any]]) -> None:
    _, info = built
    assert info["heldout_loss_after"] < info["heldout_loss_before"] - 1.0
    assert info["config"]["steps"] == 30 and info["seconds"] > 0


def test_a_canary_is_one_token_per_digit(built: tuple[Path, dict[str, Any]]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(built[0], local_files_only=True)
    prefix = len(tokenizer(CANARY_PREFIX, add_special_tokens=False)["input_ids"])
    canary = random_canary(np.random.default_rng(0), 6)
    lengths = {
        len(tokenizer(text, add_special_tokens=False)["input_ids"])
        for text in [canary, *candidate_canaries(np.random.default_rng(1), canary, 50)]
    }
    assert lengths == {prefix + 6}
    # and numbers in running text are split digit by digit too
    assert tokenizer.tokenize(" 1989") == ["Ġ1", "9", "8", "9"]


def test_pack_ends_every_text_with_eos(built: tuple[Path, dict[str, Any]]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(built[0], local_files_only=True)
    blocks = bench.pack(tokenizer, ["the market", "a game won", "the team"] * 4, 4)
    stream = blocks.flatten().tolist()
    assert blocks.shape[1] == 4
    assert stream.count(tokenizer.eos_token_id) >= 3
    assert stream[: len(tokenizer("the market")["input_ids"]) + 1][-1] == tokenizer.eos_token_id


def test_the_build_is_reproducible(built: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    folder, info = built
    again = _build(tmp_path / "again")
    assert again["weights_sha256"] == info["weights_sha256"]
    assert again["heldout_loss_after"] == info["heldout_loss_after"]
    assert (tmp_path / "again" / "tokenizer.json").read_bytes() == (
        folder / "tokenizer.json"
    ).read_bytes()


def _agnews(folder: Path) -> Path:
    folder.mkdir()
    for name, seed, count in (("train.tsv", 0, 300), ("test.tsv", 1, 40)):
        rows = [f"{text}\tWorld" for text in _texts(count, seed)]
        (folder / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def test_ensure_base_builds_only_when_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _agnews(tmp_path / "agnews")
    folder = tmp_path / "base"
    assert bench.ensure_base(folder, data=data, config=TINY) == folder
    assert bench.is_built(folder)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".base.")]  # no staging left
    info = json.loads((folder / "build_info.json").read_text())
    assert info["train_texts"] == 300 and info["eval_texts"] == 40

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("rebuilt a finished base")

    monkeypatch.setattr(bench, "build_base", refuse)
    assert bench.ensure_base(folder, data=data, config=TINY) == folder
    (folder / "build_info.json").unlink()  # a half-built folder is built again
    with pytest.raises(AssertionError, match="rebuilt"):
        bench.ensure_base(folder, data=data, config=TINY)
