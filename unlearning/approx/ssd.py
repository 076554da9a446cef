"""SSD, Selective Synaptic Dampening (Foster, Schoepf, Brintrup; AAAI 2024).

As in the official ``ParameterPerturber``: the importance of each parameter on a set is the mean
over batches of the squared gradient of the batch-mean loss (a diagonal Fisher estimate).
Parameters whose forget-set importance exceeds ``alpha`` times their importance on the full
training data are multiplied by ``min(lambda * I_D / I_f, 1)``; nothing else changes and no
optimiser step is taken. Here the parameters are the editable LoRA matrices and the head (a
causal LM's adapters only; its loss is the LM loss on response tokens, so SSD fits it as is).

The importance on the full training data depends only on the trained prefix, not on what is
deleted, so it can be computed once per prefix (:func:`importance`, e.g. right after training)
and passed to every later deletion as ``data_importance``; a pass then costs one gradient pass
over the forget set only. The cache is stale once the prefix's weights change (an approximate
edit, a retrain).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from unlearning.approx.data import Examples, task_loss
from unlearning.approx.model import PrefixModel
from unlearning.approx.registry import ALL_TASKS, PassData, method


@dataclass(frozen=True)
class SSDConfig:
    alpha: float = 10.0  # selection: I_forget > alpha * I_data
    dampening: float = 1.0  # lambda
    # The authors' scripts: the full-data loader (retain, then forget) in batches of 64, the
    # forget loader in batches of 128 when forgetting at random.
    batch_size: int = 64
    forget_batch_size: int = 128

    def __post_init__(self) -> None:
        if self.alpha <= 0:
            raise ValueError("`alpha` must be positive")
        if self.dampening <= 0:
            raise ValueError("`dampening` must be positive")
        for name in ("batch_size", "forget_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1")


@dataclass(frozen=True)
class SSDResult:
    selected: int  # parameters dampened
    total: int  # parameters considered


def importance(
    model: PrefixModel, examples: Examples, batch_size: int, *, name: str = "importance"
) -> dict[str, torch.Tensor]:
    """Mean over batches of the squared gradient of the batch loss, per trainable parameter."""
    examples.labelled(name)
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    sums = {name: torch.zeros_like(p) for name, p in params.items()}
    batches = 0
    model.eval()
    for batch in examples.batches(batch_size):
        model.zero_grad(set_to_none=True)
        assert batch.targets is not None
        task_loss(model(batch.encoded), batch.targets).backward()  # type: ignore[no-untyped-call]
        for name, p in params.items():
            if p.grad is not None:
                sums[name] += p.grad.detach() ** 2
        batches += 1
    model.zero_grad(set_to_none=True)
    return {name: total / batches for name, total in sums.items()}


def authors_order(forget: Examples, retain: Examples) -> Examples:
    """The full training data as the authors' scripts load it: the retain set, then the forget
    set (with batches of 64 this decides which samples share a batch, and so the importance)."""
    return Examples.join(retain, forget) if len(retain) else forget


def ssd(
    model: PrefixModel,
    forget: Examples,
    data: Examples | None = None,
    config: SSDConfig | None = None,
    *,
    data_importance: Mapping[str, torch.Tensor] | None = None,
) -> SSDResult:
    """Dampen, in place, the parameters the forget set matters to far more than the data does.

    ``data`` is the full training data the prefix saw (the authors order it retain, then
    forget: :func:`authors_order`). Instead of it, give
    ``data_importance``: ``importance(m, data, config.batch_size)`` computed beforehand on a model
    ``m`` of the same prefix with the same weights (its editable stages may be more than
    ``model``'s: an entry depends only on its own parameter), and the result is the same."""
    config = config or SSDConfig()
    if (data is None) == (data_importance is None):
        raise ValueError("give either `data` or its precomputed `data_importance`")
    forget_importance = importance(model, forget, config.forget_batch_size, name="forget")
    if data_importance is None:
        assert data is not None
        data_importance = importance(model, data, config.batch_size, name="training data")
    missing = sorted(set(forget_importance) - set(data_importance))
    if missing:
        raise ValueError(f"`data_importance` has no entry for {', '.join(missing)}")
    selected = total = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name not in forget_importance:
                continue
            i_f, i_d = forget_importance[name], data_importance[name]
            mask = i_f > config.alpha * i_d
            factor = torch.clamp(config.dampening * i_d / i_f.clamp_min(1e-30), max=1.0)
            p[mask] = p[mask] * factor[mask]
            selected += int(mask.sum())
            total += p.numel()
    return SSDResult(selected, total)


@method(
    "ssd",
    config=SSDConfig,
    tasks=ALL_TASKS,
    reads_statistics=True,
    description="dampens parameters far more important to the forget set than to all data (Fisher)",
)
def run_ssd(model: PrefixModel, data: PassData, config: SSDConfig) -> SSDResult:
    if data.statistics is not None:
        importance = data.statistics.importance
        return ssd(model, data.forget, config=config, data_importance=importance)
    return ssd(model, data.forget, authors_order(data.forget, data.retain_set()), config)
