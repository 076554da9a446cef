"""Training the stages of one slice sequence of one shard, with peft LoRA adapters.

Each stage gets its own named adapter, injected by exact layer index on the layers the schedule
assigns it (``layers_to_transform``), and the task head is trained at every stage and saved with
the stage. Stage ``i`` sees only the samples of the order's first ``i`` slices, its seed derives
from (model seed, shard, sequence, stage, sorted sample ids), and it starts from stage ``i-1``'s
weights; so re-running stages ``k..L`` from a saved stage ``k-1`` gives the same bytes as training
the whole sequence from scratch on the same data.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from peft import LoraConfig
from peft.functional import cast_adapter_dtype, inject_adapter_in_model, set_adapter
from peft.tuners.lora import LoraLayer
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from unlearning.gradient_penalty import gradient_norm_penalty
from unlearning.s3t.backbone import Backbone
from unlearning.s3t.blocks import stage_layers
from unlearning.s3t.config import S3TConfig, Schedule, Task
from unlearning.s3t.data import IGNORE, HiddenStates, ShardData
from unlearning.s3t.seeding import stage_seed
from unlearning.s3t.targets import adapter_keys
from unlearning.s3t.weights import LoraPair, StageWeights


@dataclass(frozen=True)
class StageResult:
    stage: int
    weights: StageWeights
    slices: tuple[int, ...]
    sample_ids: tuple[str, ...]
    sample_steps: int  # samples x epochs processed


class _Stack(nn.Module):
    """A private copy of the encoder layers, so peft can inject adapters without touching the
    shared frozen backbone (module names ``encoder.layer.<i>...`` as in the backbone)."""

    def __init__(self, layers: nn.ModuleList) -> None:
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.layer = layers

    @property
    def layers(self) -> nn.ModuleList:
        return cast(nn.ModuleList, self.encoder.layer)


def _adapter_name(stage: int) -> str:
    return f"stage{stage}"


class SequenceTrainer:
    """Trains (or resumes) the ``L`` stages of one order of one shard's slices."""

    def __init__(self, backbone: Backbone, config: S3TConfig) -> None:
        self.backbone = backbone
        self.config = config

    def train(
        self,
        data: ShardData,
        hidden: HiddenStates,
        *,
        shard: int,
        sequence: int,
        order: Sequence[int],
        start_stage: int = 1,
        prefix: Sequence[StageWeights] = (),
        last_stage: int | None = None,
        on_stage: Callable[[int], None] | None = None,
    ) -> list[StageResult]:
        """Train stages ``start_stage..last_stage`` (default ``L``); ``prefix`` holds the saved
        stages before ``start_stage``; ``on_stage(stage)`` is called after each stage."""
        cfg = self.config
        last = cfg.n_slices if last_stage is None else last_stage
        if sorted(order) != list(range(cfg.n_slices)):
            raise ValueError(f"order {list(order)} is not a permutation of 0..{cfg.n_slices - 1}")
        if not 1 <= start_stage <= cfg.n_slices or len(prefix) != start_stage - 1:
            raise ValueError("resuming at stage k needs the k-1 saved stages before it")
        if not start_stage <= last <= cfg.n_slices:
            raise ValueError(f"`last_stage` must be in {start_stage}..{cfg.n_slices}")
        stack = _Stack(copy.deepcopy(self.backbone.layers))
        with warnings.catch_warnings():  # a causal LM's head has no weights to initialise
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
            head = nn.Linear(self.backbone.hidden_size, cfg.output_dim, device=self.backbone.device)
        for stage, saved in enumerate(prefix, start=1):
            name = _adapter_name(stage)
            self._inject(stack, name, saved.layers)
            _load_adapter(stack, name, saved)
            _load_head(head, saved)
        results = []
        for stage in range(start_stage, last + 1):
            results.append(
                self._train_stage(stack, head, data, hidden, (shard, sequence), order, stage)
            )
            if on_stage is not None:
                on_stage(stage)
        return results

    def _train_stage(
        self,
        stack: _Stack,
        head: nn.Linear,
        data: ShardData,
        hidden: HiddenStates,
        place: tuple[int, int],
        order: Sequence[int],
        stage: int,
    ) -> StageResult:
        cfg = self.config
        name = _adapter_name(stage)
        rows = data.rows_of(order[:stage])
        ids = tuple(data.ids[i] for i in rows.tolist())
        seed = stage_seed(cfg.seed, *place, stage, ids)
        torch.manual_seed(seed)  # the adapter's initialisation
        layers = stage_layers(cfg.schedule, self.backbone.n_layers, cfg.n_slices, stage)
        self._inject(stack, name, layers)
        if cfg.schedule == Schedule.SISA and stage > 1:
            _load_adapter(stack, name, _extract(stack, _adapter_name(stage - 1), head))
        if stage == 1 and cfg.output_dim:
            head.reset_parameters()  # under the stage seed too
        active = (
            [name]
            if cfg.schedule == Schedule.SISA
            else [_adapter_name(s) for s in range(1, stage + 1)]
        )
        set_adapter(stack, active, inference_mode=True)  # everything frozen ...
        for module in stack.modules():  # ... but this stage's adapter and the head
            if isinstance(module, LoraLayer) and name in module.lora_A:
                module.lora_A[name].requires_grad_(True)
                module.lora_B[name].requires_grad_(True)
        head.requires_grad_(cfg.output_dim > 0)  # a causal LM's head is the frozen LM head
        # Active adapters sit on this stage's block and the blocks above it (S3T), or on the
        # same layers (SISA): the lowest layer it trains is where the frozen bottom ends.
        self._fit(stack, head, data, hidden, rows, min(layers), seed)
        return StageResult(
            stage=stage,
            weights=_extract(stack, name, head),
            slices=tuple(order[:stage]),
            sample_ids=ids,
            sample_steps=len(ids) * cfg.epochs_per_stage,
        )

    def _inject(self, stack: _Stack, name: str, layers: Sequence[int]) -> None:
        cfg = self.config
        lora = LoraConfig(
            r=cfg.lora_rank,
            lora_alpha=cfg.lora_alpha,  # type: ignore[arg-type]  # a float works
            lora_dropout=cfg.lora_dropout,
            use_rslora=cfg.use_rslora,
            target_modules=list(cfg.target_modules),
            layers_to_transform=list(layers),
            layers_pattern="layer",
            bias="none",
        )
        with warnings.catch_warnings():
            # One adapter per stage in one module tree is the point; peft warns about it.
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            # GPT-2's projections are Conv1D; peft transposes for them and says so.
            warnings.filterwarnings("ignore", message="fan_in_fan_out is set to False")
            inject_adapter_in_model(lora, stack, adapter_name=name)
        # peft gives a new adapter its base layer's dtype; on a half-precision base it is
        # widened back, so adapters, their gradients and AdamW's state are float32 everywhere
        # (a no-op on a float32 base).
        cast_adapter_dtype(stack, name)

    def _fit(
        self,
        stack: _Stack,
        head: nn.Linear,
        data: ShardData,
        hidden: HiddenStates,
        rows: torch.Tensor,
        depth: int,
        seed: int,
    ) -> None:
        cfg = self.config
        if len(rows) == 0:
            return
        params = [
            p for p in itertools.chain(stack.parameters(), head.parameters()) if p.requires_grad
        ]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate)
        # The data order is drawn on the CPU on every device, so it is the same everywhere.
        order_rng = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # LoRA dropout
        # The frozen backbone keeps eval mode (its dropout would only add noise to fixed
        # features and costs a fifth of a cached step); the adapters' own dropout is live.
        for module in stack.modules():
            if isinstance(module, LoraLayer):
                module.lora_dropout.train()
        # Double backprop (the gradient penalty) needs attention made of differentiable ops.
        attention = (
            sdpa_kernel(SDPBackend.MATH) if cfg.gradient_penalty else contextlib.nullcontext()
        )
        try:
            with attention:
                for _ in range(cfg.epochs_per_stage):
                    order = torch.randperm(len(rows), generator=order_rng).to(rows.device)
                    shuffled = rows[order]
                    for first in range(0, len(shuffled), cfg.batch_size):
                        batch = shuffled[first : first + cfg.batch_size]
                        mask = data.encoded.attention_mask[batch]
                        states = self.backbone.run(
                            hidden.at(depth, batch),
                            mask,
                            depth,
                            self.backbone.n_layers,
                            stack.layers,
                            checkpoint=cfg.gradient_checkpointing,
                        )
                        loss = self._loss(head, states, mask, data.targets[batch])
                        if cfg.gradient_penalty:
                            loss = gradient_norm_penalty(loss, params, cfg.gradient_penalty)
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()  # type: ignore[no-untyped-call]
                        optimizer.step()
        finally:
            stack.eval()
            for param in params:
                param.requires_grad_(False)

    def _loss(
        self, head: nn.Linear, states: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        task = self.config.task
        if task == Task.CAUSAL_LM:  # the loss in float32 whatever the base's precision
            return lm_loss(self.backbone.logits(states).float(), targets)
        outputs = head(self.backbone.pool(states, mask).to(head.weight.dtype))
        if task == Task.REGRESSION:
            return nn.functional.mse_loss(outputs.squeeze(-1), targets)
        return nn.functional.cross_entropy(outputs, targets)


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the positions in the loss (0 when a batch has none,
    e.g. responses cut off by ``max_length``, so no NaN reaches the weights)."""
    total = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )
    return total / (labels != IGNORE).sum().clamp(min=1)


def _lora_modules(stack: nn.Module, name: str) -> list[tuple[int, str, Any]]:
    """Adapter ``name``'s modules as (layer, adapter key, module); paths are
    ``encoder.layer.<i>.<path in the block>``, keyed as :mod:`unlearning.s3t.targets` keys them."""
    by_layer: dict[int, dict[str, Any]] = {}
    for path, module in stack.named_modules():
        if isinstance(module, LoraLayer) and name in module.lora_A:
            _, _, layer, inner = path.split(".", 3)
            by_layer.setdefault(int(layer), {})[inner] = module
    return [
        (layer, key, modules[inner])
        for layer, modules in by_layer.items()
        for inner, key in adapter_keys(modules).items()
    ]


def _extract(stack: nn.Module, name: str, head: nn.Linear) -> StageWeights:
    adapters: dict[tuple[int, str], LoraPair] = {}
    scalings = set()
    for layer, module_name, module in _lora_modules(stack, name):
        adapters[(layer, module_name)] = LoraPair(
            a=module.lora_A[name].weight.detach().clone(),
            b=module.lora_B[name].weight.detach().clone(),
        )
        scalings.add(float(module.scaling[name]))
    if len(scalings) != 1:
        raise RuntimeError(f"adapter {name} has no single LoRA scaling: {scalings}")
    return StageWeights(
        adapters=adapters,
        head_weight=head.weight.detach().clone(),
        head_bias=head.bias.detach().clone(),
        scaling=scalings.pop(),
    )


def _load_adapter(stack: nn.Module, name: str, weights: StageWeights) -> None:
    modules = {
        (layer, module_name): module for layer, module_name, module in _lora_modules(stack, name)
    }
    if set(modules) != set(weights.adapters):
        raise ValueError("saved adapters do not match the layers of the stage")
    with torch.no_grad():
        for key, module in modules.items():
            module.lora_A[name].weight.copy_(weights.adapters[key].a)
            module.lora_B[name].weight.copy_(weights.adapters[key].b)


def _load_head(head: nn.Linear, weights: StageWeights) -> None:
    with torch.no_grad():
        head.weight.copy_(weights.head_weight)
        head.bias.copy_(weights.head_bias)
