"""A served prefix as a trainable model: what every approximate method edits.

The frozen backbone runs as is; the prefix's adapters are added as forward hooks on its target
linear modules (as in serving), the adapters of the *editable* stages and the head are
``nn.Parameter`` s, everything else is constant. :meth:`PrefixModel.export` returns the prefix's
stages with the edited tensors, ready to be stored as artifacts.

On a causal language model (a decoder base model) there is no trained head: the model's
outputs are the frozen language-model head's next-token logits at every position
(``[rows, positions, vocabulary]``), its loss is the LM loss on response tokens
(:func:`unlearning.approx.data.task_loss` on next-token labels), and only the editable adapters
are parameters; the stages' zero-size head tensors are exported as they came.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Sequence
from typing import Any

import torch
from torch import nn

from unlearning.s3t.backbone import Backbone, Encoded
from unlearning.s3t.targets import stack_targets
from unlearning.s3t.weights import LoraPair, StageWeights


class PrefixModel(nn.Module):
    def __init__(
        self,
        backbone: Backbone,
        stages: Sequence[StageWeights],
        *,
        editable: Collection[int],
        target_modules: Sequence[str],
    ) -> None:
        """``stages``: the prefix, stage 1 first; ``editable``: 0-based indices of the stages
        whose adapters may change (the head, the last stage's, always may, but for a causal LM's,
        which has no weights)."""
        super().__init__()
        if not stages:
            raise ValueError("a prefix needs at least one stage")
        if not set(editable) <= set(range(len(stages))):
            raise ValueError(f"`editable` must index the {len(stages)} stages")
        self.backbone = backbone
        self.stages = list(stages)
        self.editable = sorted(set(editable))
        self.lora = nn.ParameterDict()
        # The effective adapter per (layer, module): the latest stage's (as in serving).
        self._source: dict[tuple[int, str], int] = {}
        for index, stage in enumerate(stages):
            for key in stage.adapters:
                self._source[key] = index
        for key, index in self._source.items():
            if index in self.editable:
                pair = stages[index].adapters[key]
                self.lora[_name(index, key, "a")] = nn.Parameter(pair.a.detach().clone())
                self.lora[_name(index, key, "b")] = nn.Parameter(pair.b.detach().clone())
        last = stages[-1]
        #: A decoder: outputs are next-token logits, and the (zero-size) head is not trained.
        self.causal = backbone.causal
        with warnings.catch_warnings():  # a causal LM's head has no weights to initialise
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
            self.head = nn.Linear(
                last.head_weight.shape[1], last.head_weight.shape[0], device=last.head_weight.device
            )
        with torch.no_grad():
            self.head.weight.copy_(last.head_weight)
            self.head.bias.copy_(last.head_bias)
        if self.causal:
            self.head.requires_grad_(False)
        self._targets = stack_targets(backbone.layers, target_modules)
        missing = set(self._source) - set(self._targets)
        if missing:
            raise ValueError(f"the backbone has no target module for {sorted(missing)}")
        self.depth = min((layer for layer, _ in self._source), default=backbone.n_layers)

    def _pair(self, key: tuple[int, str]) -> tuple[torch.Tensor, torch.Tensor, float]:
        index = self._source[key]
        stage = self.stages[index]
        if index in self.editable:
            return (
                self.lora[_name(index, key, "a")],
                self.lora[_name(index, key, "b")],
                stage.scaling,
            )
        pair = stage.adapters[key]
        return pair.a, pair.b, stage.scaling

    def forward(self, encoded: Encoded, bottom: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs for ``encoded``: the head's, or a causal LM's next-token logits.
        ``bottom``: the plain backbone's hidden states entering layer :attr:`depth` for these
        inputs (``backbone.hidden_at(encoded, depth)``), when the caller has them cached; they
        depend on no adapter, so one copy serves every edit."""
        if self.causal:  # float32 logits whatever the base's precision (a no-op on float32)
            return self.backbone.logits(self.states(encoded, bottom)).float()
        pooled = self.pooled(encoded, bottom)
        out: torch.Tensor = self.head(pooled.to(self.head.weight.dtype))
        return out

    def pooled(self, encoded: Encoded, bottom: torch.Tensor | None = None) -> torch.Tensor:
        """What the head reads: the family's pooling of the adapted last hidden states."""
        return self.backbone.pool(self.states(encoded, bottom), encoded.attention_mask)

    def states(self, encoded: Encoded, bottom: torch.Tensor | None = None) -> torch.Tensor:
        """The last block's hidden states with the prefix's adapters."""
        if bottom is None:
            with torch.no_grad():
                hidden = self.backbone.hidden_at(encoded, self.depth)
        else:
            hidden = bottom
        handles = [
            self._targets[key].register_forward_hook(_Delta(*self._pair(key)))
            for key in sorted(self._source)
        ]
        try:
            hidden = self.backbone.run(
                hidden, encoded.attention_mask, self.depth, self.backbone.n_layers
            )
        finally:
            for handle in handles:
                handle.remove()
        return hidden

    def export(self) -> list[StageWeights]:
        """The prefix's stages with the edited adapters, the last one with the edited head."""
        stages = []
        for index, stage in enumerate(self.stages):
            adapters = dict(stage.adapters)
            for key in stage.adapters:
                if index in self.editable and self._source[key] == index:
                    adapters[key] = LoraPair(
                        self.lora[_name(index, key, "a")].detach().clone(),
                        self.lora[_name(index, key, "b")].detach().clone(),
                    )
            last = index == len(self.stages) - 1
            stages.append(
                StageWeights(
                    adapters=adapters,
                    head_weight=self.head.weight.detach().clone() if last else stage.head_weight,
                    head_bias=self.head.bias.detach().clone() if last else stage.head_bias,
                    scaling=stage.scaling,
                )
            )
        return stages


def _name(index: int, key: tuple[int, str], which: str) -> str:
    layer, module = key
    return f"s{index}_l{layer}_{module.replace('.', '__')}_{which}"  # no dot in a parameter name


class _Delta:
    def __init__(self, a: torch.Tensor, b: torch.Tensor, scaling: float) -> None:
        self.a, self.b, self.scaling = a, b, scaling

    def __call__(self, _module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        # On a half-precision base: the delta in float32, added in float32, rounded once (as
        # training's peft layers and serving's hooks do); on a float32 base no cast at all.
        delta: torch.Tensor = (inputs[0].to(self.a.dtype) @ self.a.T) @ self.b.T * self.scaling
        if output.dtype == delta.dtype:
            return output + delta
        return (output.to(delta.dtype) + delta).to(output.dtype)
