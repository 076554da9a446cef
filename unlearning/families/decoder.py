"""Decoder-only causal language models: Llama and the models built like it (Mistral, Qwen2,
Qwen3), and GPT-2.

The blocks run under a causal mask built here (an additive float mask, so every attention
implementation reads it the same way), with the sequence's positions offset by what a KV cache
already holds: a :class:`DecoderContext` carries the mask, the position embeddings and the cache
for one forward step. Right padding only: training rows are padded at the end, and generation
runs one prompt per row set without padding. What the head reads is the final norm's output; the
frozen language-model head turns it into next-token logits.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar, cast

import torch
from torch import nn

from unlearning.families.base import (
    Content,
    Encoded,
    Family,
    Modality,
    UnsupportedArchitecture,
    child,
)
from unlearning.families.chat import Conversation, render_ids


@dataclass(frozen=True)
class DecoderContext:
    """What every block of one forward step reads besides the hidden states."""

    mask: torch.Tensor  # [rows, 1, new tokens, cached + new tokens], additive
    position_ids: torch.Tensor  # [1, new tokens]
    position_embeddings: Any  # rotary (cos, sin), or None (GPT-2 adds positions at the embedding)
    cache: Any  # a transformers Cache the blocks extend, or None


@cache
def _cache_keyword(block_type: Any) -> str:
    """The name under which this transformers release passes a KV cache to a block
    (``cache`` from 5.2x, ``past_key_values`` before)."""
    parameters = inspect.signature(block_type.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def causal_mask(
    attention_mask: torch.Tensor, past: int, new: int, dtype: torch.dtype, window: int | None
) -> torch.Tensor:
    """Additive mask ``[rows, 1, new, past + new]``: query ``i`` (at position ``past + i``) sees
    the real keys at or before it (and within ``window`` positions of it, when set)."""
    keys = attention_mask.shape[1]
    if keys != past + new:
        raise ValueError(f"the attention mask covers {keys} tokens, expected {past + new}")
    device = attention_mask.device
    query_pos = torch.arange(past, past + new, device=device).unsqueeze(1)
    key_pos = torch.arange(keys, device=device).unsqueeze(0)
    allowed = key_pos <= query_pos
    if window is not None:
        allowed = allowed & (query_pos - key_pos < window)
    allowed = allowed.unsqueeze(0) & attention_mask.bool().unsqueeze(1)
    blocked = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=device)
    return torch.where(allowed, torch.zeros((), dtype=dtype, device=device), blocked).unsqueeze(1)


class DecoderFamily(Family):
    """Llama-style decoders: ``model.embed_tokens``, ``model.layers``, ``model.norm``,
    ``model.rotary_emb`` and ``lm_head``."""

    name = "llama"
    modality = Modality.TEXT
    causal = True
    auto_model = "AutoModelForCausalLM"
    model_types = frozenset({"llama"})
    default_targets: ClassVar[tuple[str, ...]] = (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    )  # fmt: skip

    def core(self, model: nn.Module) -> Any:
        return child(model, "model")

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return cast(nn.ModuleList, child(self.core(model), "layers"))

    def window(self, config: Any) -> int | None:
        """The sliding attention window every block uses, if any."""
        return None

    def encode(
        self, processor: Any, config: Any, contents: Sequence[Content], max_length: int
    ) -> Encoded:
        """Token ids right-padded to ``max_length`` (longer samples are cut at the end), the
        attention mask, and the loss mask (response tokens of a conversation; all of a text)."""
        rows = len(contents)
        inputs = torch.full((rows, max_length), pad_id(processor), dtype=torch.long)
        attention = torch.zeros((rows, max_length), dtype=torch.long)
        loss = torch.zeros((rows, max_length), dtype=torch.long)
        for row, content in enumerate(contents):
            if not isinstance(content, (str, Conversation)):
                raise ValueError(f"a {self.name} model reads texts and conversations, not images")
            ids, mask = render_ids(processor, content)
            ids, mask = ids[:max_length], mask[:max_length]
            inputs[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[row, : len(ids)] = 1
            loss[row, : len(mask)] = torch.tensor(mask, dtype=torch.long)
        return Encoded(inputs, attention, loss)

    def embed(self, model: nn.Module, encoded: Encoded) -> torch.Tensor:
        return self.embed_tokens(model, encoded.inputs, 0)

    def embed_tokens(self, model: nn.Module, ids: torch.Tensor, past: int) -> torch.Tensor:
        """Embeddings of tokens at positions ``past..``."""
        out: torch.Tensor = self.core(model).embed_tokens(ids)
        return out

    def positions(self, model: nn.Module, hidden: torch.Tensor, position_ids: torch.Tensor) -> Any:
        return self.core(model).rotary_emb(hidden, position_ids)

    def context(self, model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        return self.step_context(model, hidden, attention_mask, 0, None)

    def step_context(
        self,
        model: nn.Module,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        past: int,
        kv_cache: Any,
    ) -> DecoderContext:
        """The context of a step adding ``hidden``'s tokens after ``past`` cached ones;
        ``attention_mask`` covers the cached and the new tokens."""
        new = hidden.shape[1]
        position_ids = torch.arange(past, past + new, device=hidden.device).unsqueeze(0)
        window = self.window(cast(Any, model).config)
        return DecoderContext(
            mask=causal_mask(attention_mask, past, new, hidden.dtype, window),
            position_ids=position_ids,
            position_embeddings=self.positions(model, hidden, position_ids),
            cache=kv_cache,
        )

    def run_block(self, block: nn.Module, hidden: torch.Tensor, context: Any) -> torch.Tensor:
        kwargs: dict[str, Any] = {
            "attention_mask": context.mask,
            "position_ids": context.position_ids,
            _cache_keyword(cast(Any, type(block))): context.cache,
            "use_cache": context.cache is not None,
        }
        if context.position_embeddings is not None:
            kwargs["position_embeddings"] = context.position_embeddings
        out = block(hidden, **kwargs)
        return cast(torch.Tensor, out[0] if isinstance(out, tuple) else out)

    def final_norm(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.core(model).norm(hidden)
        return out

    def pool(
        self, model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """What the language-model head reads: every position's state after the final norm."""
        return self.final_norm(model, hidden)

    def logits(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits from the last block's states."""
        out: torch.Tensor = cast(Any, model).lm_head(self.final_norm(model, hidden))
        return out


class MistralFamily(DecoderFamily):
    name = "mistral"
    model_types = frozenset({"mistral"})

    def window(self, config: Any) -> int | None:
        window = getattr(config, "sliding_window", None)
        return int(window) if window else None


class Qwen2Family(DecoderFamily):
    """Qwen2 and Qwen3 (Qwen3 adds a norm on queries and keys inside its attention)."""

    name = "qwen2"
    model_types = frozenset({"qwen2", "qwen3"})

    def check(self, config: Any) -> None:
        if getattr(config, "use_sliding_window", False):
            raise UnsupportedArchitecture(
                f"{config.model_type} with use_sliding_window (sliding attention on some "
                "layers only) is not supported"
            )


class Gpt2Family(DecoderFamily):
    """GPT-2: ``transformer.wte`` + ``transformer.wpe``, ``transformer.h``, ``transformer.ln_f``;
    its projections are ``Conv1D`` modules (weights stored transposed)."""

    name = "gpt2"
    model_types = frozenset({"gpt2"})
    default_targets: ClassVar[tuple[str, ...]] = ("c_attn", "c_proj", "c_fc")

    def core(self, model: nn.Module) -> Any:
        return child(model, "transformer")

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return cast(nn.ModuleList, child(self.core(model), "h"))

    def embed_tokens(self, model: nn.Module, ids: torch.Tensor, past: int) -> torch.Tensor:
        core = self.core(model)
        positions = torch.arange(past, past + ids.shape[1], device=ids.device).unsqueeze(0)
        out: torch.Tensor = core.wte(ids) + core.wpe(positions)
        return out

    def positions(self, model: nn.Module, hidden: torch.Tensor, position_ids: torch.Tensor) -> Any:
        return None

    def final_norm(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.core(model).ln_f(hidden)
        return out


def pad_id(tokenizer: Any) -> int:
    """The id padding uses (masked out everywhere): the pad token, else end-of-sequence, else 0."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return 0


__all__ = [
    "DecoderContext",
    "DecoderFamily",
    "Gpt2Family",
    "MistralFamily",
    "Qwen2Family",
    "causal_mask",
    "pad_id",
]
