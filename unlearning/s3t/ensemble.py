"""Serving an ensemble of shard models that share one frozen backbone.

Each live shard serves a prefix of stages of one of its sequences. The adapters are not merged
into the backbone; they are applied as forward hooks on the backbone's target linear modules, so
switching any shard to any prefix is only a change of tensors (no reload, no copy of the
backbone).

Batched inference (``batched=True``): everything below the lowest adapted layer of the served
prefixes is plain backbone and is computed once for all shards; above it the shards' inputs are
stacked along the batch and each shard's LoRA delta is applied to its own rows with one batched
matrix product per module, as multi-adapter LoRA servers do. ``batched=False`` runs one full
forward pass per shard, the naive baseline.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from unlearning.s3t.backbone import Backbone, Encoded
from unlearning.s3t.targets import stack_targets
from unlearning.s3t.weights import LoraPair, StageWeights


@dataclass(frozen=True)
class ServedShard:
    """The effective weights of a prefix: per (layer, module) the adapter of the latest stage
    that has one (S3T stages have disjoint layers; a SISA stage replaces its predecessor), and the
    last stage's head."""

    adapters: dict[tuple[int, str], tuple[LoraPair, float]]
    head_weight: torch.Tensor
    head_bias: torch.Tensor

    @classmethod
    def from_prefix(cls, stages: Sequence[StageWeights]) -> ServedShard:
        if not stages:
            raise ValueError("a served shard needs at least one stage")
        adapters: dict[tuple[int, str], tuple[LoraPair, float]] = {}
        for stage in stages:
            for key, pair in stage.adapters.items():
                adapters[key] = (pair, stage.scaling)
        return cls(adapters, stages[-1].head_weight, stages[-1].head_bias)

    def lowest_layer(self, n_layers: int) -> int:
        return min((layer for layer, _ in self.adapters), default=n_layers)


@dataclass(frozen=True)
class FrozenRows:
    """Rows already encoded, with the plain backbone's states entering layer ``depth``: what
    any served prefix whose adapters all sit at ``depth`` or above starts from. Computed once
    for rows scored again and again (a model's evaluation split), it spares their bottom
    layers and their encoding each time."""

    encoded: Encoded
    depth: int
    hidden: torch.Tensor


def lowest_layer(shards: Sequence[ServedShard], n_layers: int) -> int:
    """Where the shards' adapters start: everything below is plain backbone, computed once."""
    return min(shard.lowest_layer(n_layers) for shard in shards)


class EnsemblePredictor:
    def __init__(self, backbone: Backbone, target_modules: Sequence[str]) -> None:
        self.backbone = backbone
        self._targets = stack_targets(backbone.layers, target_modules)

    def shard_outputs(
        self,
        encoded: Encoded,
        shards: Sequence[ServedShard],
        *,
        batched: bool = True,
        frozen: FrozenRows | None = None,
    ) -> torch.Tensor:
        """Per-shard outputs (logits or regression values), shape ``[shards, rows, outputs]``;
        ``frozen``: these rows' states entering a lower layer, computed before (the same
        outputs, bitwise, for less work)."""
        if not shards:
            raise ValueError("no live shard to serve from")
        if not batched:
            return torch.cat([self._forward(encoded, [shard], 0) for shard in shards])
        depth = lowest_layer(shards, self.backbone.n_layers)
        return self._forward(encoded, shards, depth, frozen)

    def frozen_rows(self, encoded: Encoded, depth: int) -> FrozenRows:
        with torch.no_grad():
            return FrozenRows(encoded, depth, self.backbone.hidden_at(encoded, depth))

    @contextmanager
    def adapters(self, shards: Sequence[ServedShard], depth: int) -> Iterator[None]:
        """While open, the backbone's layers from ``depth`` up add each shard's LoRA deltas to
        its own rows, the rows being stacked shard by shard along the batch."""
        handles = [
            self._targets[key].register_forward_hook(_LoraHook(len(shards), shards, key))
            for key in sorted({k for shard in shards for k in shard.adapters})
            if key[0] >= depth
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _forward(
        self,
        encoded: Encoded,
        shards: Sequence[ServedShard],
        depth: int,
        frozen: FrozenRows | None = None,
    ) -> torch.Tensor:
        n_shards, rows = len(shards), len(encoded)
        with torch.no_grad():
            if frozen is not None and frozen.depth <= depth:
                below = self.backbone.run(
                    frozen.hidden, encoded.attention_mask, frozen.depth, depth
                )
            else:
                below = self.backbone.hidden_at(encoded, depth)
            hidden = below.repeat(n_shards, 1, 1)
            mask = encoded.attention_mask.repeat(n_shards, 1)
            with self.adapters(shards, depth):
                hidden = self.backbone.run(hidden, mask, depth, self.backbone.n_layers)
            pooled = self.backbone.pool(hidden, mask).view(n_shards, rows, -1)
            weight = torch.stack([shard.head_weight for shard in shards])
            bias = torch.stack([shard.head_bias for shard in shards])
            pooled = pooled.to(weight.dtype)  # a half-precision base's states meet a float32 head
            return torch.baddbmm(bias.unsqueeze(1), pooled, weight.transpose(1, 2))


class _LoraHook:
    """Adds each shard's LoRA delta to its own rows of one module's output. On a half-precision
    base the delta is computed in float32 from the widened input and added in float32, then
    rounded once to the base's dtype, as peft's LoRA layer does in training."""

    def __init__(self, n_shards: int, shards: Sequence[ServedShard], key: tuple[int, str]) -> None:
        present = [i for i, shard in enumerate(shards) if key in shard.adapters]
        pairs = [shards[i].adapters[key] for i in present]
        self.n_shards = n_shards
        self.a_t = torch.stack([pair.a for pair, _ in pairs]).transpose(1, 2)
        self.b_t = torch.stack([pair.b for pair, _ in pairs]).transpose(1, 2)
        device = self.a_t.device
        self.index = torch.tensor(present, dtype=torch.long, device=device)
        self.scaling = torch.tensor([scaling for _, scaling in pairs], device=device).view(-1, 1, 1)

    def __call__(self, _module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        x = inputs[0].reshape(self.n_shards, -1, inputs[0].shape[-1])[self.index]
        delta = torch.bmm(torch.bmm(x.to(self.a_t.dtype), self.a_t), self.b_t) * self.scaling
        out = output.reshape(self.n_shards, -1, output.shape[-1])
        if out.dtype == delta.dtype:  # a float32 base: no cast at all
            return out.index_add(0, self.index, delta).view_as(output)
        summed = out.to(delta.dtype).index_add(0, self.index, delta)
        return summed.to(output.dtype).view_as(output)
