"""The base decoder the LLM benchmark fine-tunes: a toy Llama pre-trained here, from scratch.

Nothing is downloaded. The model is a tiny ``LlamaForCausalLM`` (about 1.2 M parameters: hidden
128, 4 layers, 4 attention heads over 2 key/value heads, MLP 344, tied embeddings, 256
positions) pre-trained for a few CPU minutes on the AG News training texts the project ships, with
a byte-level BPE tokenizer (4,096 tokens) trained on the same texts. It is a *toy* language model,
not a real pretrained one: it writes news-flavoured English of poor quality, which is all the
benchmark needs (a base whose fine-tuning memorizes planted canaries and whose held-out loss
means something).

- Tokenizer: GPT-2-style byte-level BPE (``tokenizers``), special tokens ``<|pad|>`` and
  ``<|eos|>``; digits are never merged with each other (an optional leading space is kept:
  ``" 1989"`` is ``Ġ1 9 8 9``), so a canary ``"my secret code is 4 8 1 9 3 7"`` is one token
  per digit and every candidate of its space tokenises to the same length. Saved as a
  ``PreTrainedTokenizerFast`` with pad and eos set.
- Pre-training: next-token loss on the texts joined by ``<|eos|>`` and cut into blocks of
  ``seq_len`` tokens, AdamW with linear warm-up and cosine decay, a fixed seed.
- Output: ``save_pretrained`` of both (float32 safetensors) and ``build_info.json`` (seed,
  sizes, steps, held-out loss on the AG News test texts before and after, seconds, a SHA-256
  of the weights). Loadable with ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained(
  folder, local_files_only=True)``.

:func:`ensure_base` builds the folder only when it is missing (``var/llm-base`` by default);
the build writes a temporary folder and renames it, so a half-built base is never taken for a
built one. Same seed, same torch build and thread count: the same weights. The script runs torch
on one CPU thread by default (``--threads``): on a machine shared with other work, two threads
were ten times slower per step than one here.

Usage: ``python bench/llm_base.py [--out var/llm-base] [--steps N] [--force]``; prints the
build info as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # llm_data, also when a test loads this file

from llm_data import read_agnews  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("BENCH_DATA_DIR", ROOT.parent / "shared" / "data")) / "agnews"
DEFAULT_OUT = ROOT / "var" / "llm-base"
PAD = "<|pad|>"
EOS = "<|eos|>"
BUILD_INFO = "build_info.json"


@dataclass(frozen=True)
class BaseConfig:
    """Sizes and pre-training hyper-parameters of the base (the defaults are the benchmark's:
    about three minutes on two CPU cores)."""

    vocab_size: int = 4096
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 344
    max_positions: int = 256
    steps: int = 800
    batch_size: int = 32
    seq_len: int = 64
    lr: float = 3e-3
    warmup: int = 30
    weight_decay: float = 0.01
    seed: int = 0
    eval_batch_size: int = 64


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of at most ``vocab_size`` tokens trained on ``texts``
    (deterministic), digits split one by one (see the module's docstring)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r" ?\p{N}"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, pad_token=PAD, eos_token=EOS, model_max_length=256
    )


def digits_are_single_tokens(tokenizer: PreTrainedTokenizerFast) -> bool:
    """Whether every digit, with or without a leading space, is one token."""
    return all(
        len(tokenizer(text, add_special_tokens=False)["input_ids"]) == 1
        for d in range(10)
        for text in (str(d), f" {d}")
    )


def pack(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], seq_len: int) -> torch.Tensor:
    """``texts``, each followed by ``<|eos|>``, as one token stream cut into ``[blocks,
    seq_len]`` (the incomplete tail dropped)."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for encoding in tokenizer.backend_tokenizer.encode_batch(list(texts)):
        stream.extend(encoding.ids)
        stream.append(eos)
    blocks = len(stream) // seq_len
    if blocks == 0:
        raise ValueError(f"the texts make fewer than {seq_len} tokens")
    return torch.tensor(stream[: blocks * seq_len], dtype=torch.long).view(blocks, seq_len)


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, blocks: torch.Tensor, batch_size: int) -> float:
    """Mean next-token cross-entropy (nats per token) of ``model`` over ``blocks``."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        batch = blocks[start : start + batch_size]
        loss = model(input_ids=batch, labels=batch).loss
        tokens = batch.numel() - len(batch)  # the first token of each block has no target
        total += loss.item() * tokens
        count += tokens
    return total / count


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over the model's tensors in state-dict order (names, shapes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _model(config: BaseConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    torch.manual_seed(config.seed)
    llama = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.kv_heads,
        intermediate_size=config.intermediate,
        max_position_embeddings=config.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model: LlamaForCausalLM = LlamaForCausalLM(llama)  # float32, torch's default dtype
    return model


def _schedule(config: BaseConfig) -> Any:
    def factor(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        progress = (step - config.warmup) / max(1, config.steps - config.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def build_base(
    out: Path,
    *,
    texts: Sequence[str],
    eval_texts: Sequence[str],
    config: BaseConfig = BaseConfig(),
) -> dict[str, Any]:
    """Train the tokenizer and pre-train the model on ``texts``; save both and the build info
    into ``out`` (replaced if it exists); return the build info."""
    started = time.perf_counter()
    tokenizer = train_tokenizer(texts, config.vocab_size)
    if not digits_are_single_tokens(tokenizer):
        raise ValueError("the texts did not teach the tokenizer every digit as one token")
    train_blocks = pack(tokenizer, texts, config.seq_len)
    eval_blocks = pack(tokenizer, eval_texts, config.seq_len)
    model = _model(config, tokenizer)
    loss_before = heldout_loss(model, eval_blocks, config.eval_batch_size)

    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config))
    order = torch.randperm(len(train_blocks), generator=generator)
    position, train_losses = 0, []
    train_started = time.perf_counter()
    model.train()
    for _ in range(config.steps):
        if position + config.batch_size > len(order):  # a new epoch, a new order
            order, position = torch.randperm(len(train_blocks), generator=generator), 0
        batch = train_blocks[order[position : position + config.batch_size]]
        position += config.batch_size
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        train_losses.append(loss.item())
    train_seconds = time.perf_counter() - train_started
    loss_after = heldout_loss(model, eval_blocks, config.eval_batch_size)

    info: dict[str, Any] = {
        "what": "a toy Llama pre-trained here from scratch on AG News texts; not a real "
        "pretrained LM",
        "config": dataclasses.asdict(config),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "train_texts": len(texts),
        "train_tokens": train_blocks.numel(),
        "epochs": round(config.steps * config.batch_size / len(train_blocks), 3),
        "eval_texts": len(eval_texts),
        "eval_tokens": eval_blocks.numel(),
        "heldout_loss_before": round(loss_before, 4),
        "heldout_loss_after": round(loss_after, 4),
        "train_loss_last_50": round(sum(train_losses[-50:]) / len(train_losses[-50:]), 4),
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "weights_sha256": weights_sha256(model),
    }
    _save(out, model, tokenizer, info)
    return info


def _save(
    out: Path, model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, info: dict[str, Any]
) -> None:
    """Write into a temporary sibling folder, build info last, then rename it to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
        staging.chmod(0o755)  # mkdtemp's 0700 is for the build only
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def is_built(folder: Path) -> bool:
    """Whether ``folder`` holds a finished build (its build info is written last)."""
    return (folder / BUILD_INFO).is_file()


def ensure_base(
    folder: Path = DEFAULT_OUT,
    *,
    data: Path = DEFAULT_DATA,
    config: BaseConfig = BaseConfig(),
    eval_limit: int = 1000,
) -> Path:
    """``folder``, built from ``data``'s ``train.tsv`` (and the first ``eval_limit`` texts of
    ``test.tsv`` for the held-out loss) only when it holds no finished build."""
    if not is_built(folder):
        texts = [text for text, _ in read_agnews(data / "train.tsv")]
        eval_texts = [text for text, _ in read_agnews(data / "test.tsv")][:eval_limit]
        build_base(folder, texts=texts, eval_texts=eval_texts, config=config)
    return folder


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    defaults = BaseConfig()
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to write")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of train/test.tsv")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="optimizer steps")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed")
    parser.add_argument("--eval-limit", type=int, default=1000, help="test texts for the loss")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (one is slowed least by a busy machine)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if already built")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.force and args.out.exists():
        shutil.rmtree(args.out)
    config = dataclasses.replace(defaults, steps=args.steps, seed=args.seed)
    folder = ensure_base(args.out, data=args.data, config=config, eval_limit=args.eval_limit)
    print(json.dumps(json.loads((folder / BUILD_INFO).read_text()), indent=2))


if __name__ == "__main__":
    main()
