"""IAU, Influence Approximation Unlearning (Liu, Wu, Lian, Chen, 2025).

As in the official ``IAU_unlearn.py``: one optimiser step (Adam, lr 1e-3) along the accumulated
gradient of the mean retain loss minus the mean forget loss. Its accuracy relies on the original
model having been trained with a gradient-norm penalty (:func:`gradient_norm_penalty`), which the
S3T trainer applies when ``S3TConfig.gradient_penalty`` is set.

The retain term can come from a cache. With mean losses over the prefix's full training data
``D`` (``n`` samples), a forget set ``F`` (``m`` of them) and the retain set ``R``, the rest of
``D``: ``n * g_D = (n - m) * g_R + m * g_F``, so

    g_R = (n * g_D - m * g_F) / (n - m)    and    g_R - g_F = n * (g_D - g_F) / (n - m).

``g_D`` depends only on the trained prefix: :func:`full_data_gradient` computes it once (e.g. right
after training) and every later deletion passes it as ``data_gradient``, paying one gradient
pass over the forget set only. The cache is stale once the prefix's weights change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearning.approx.data import Examples, UnlearningInputError, task_loss
from unlearning.approx.model import PrefixModel
from unlearning.approx.registry import ALL_TASKS, PassData, method
from unlearning.approx.statistics import DataGradient, data_statistics
from unlearning.gradient_penalty import gradient_norm_penalty

__all__ = ["DataGradient", "IAUConfig", "full_data_gradient", "gradient_norm_penalty", "iau"]


@dataclass(frozen=True)
class IAUConfig:
    lr: float = 1e-3
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError("`lr` must be positive")
        if self.batch_size < 1:
            raise ValueError("`batch_size` must be at least 1")


def _trainable(model: PrefixModel) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _accumulate(model: PrefixModel, examples: Examples, sign: float, batch_size: int) -> None:
    """Add ``sign * grad(mean loss over examples)`` to the parameters' gradients."""
    n = len(examples)
    for batch in examples.batches(batch_size):
        assert batch.targets is not None
        loss = task_loss(model(batch.encoded), batch.targets) * (len(batch) / n)
        (sign * loss).backward()  # type: ignore[no-untyped-call]


def _gradients(model: PrefixModel, examples: Examples, batch_size: int) -> dict[str, torch.Tensor]:
    """The gradient of the mean loss over ``examples`` (zeros for an unused parameter)."""
    model.eval()
    model.zero_grad(set_to_none=True)
    _accumulate(model, examples, 1.0, batch_size)
    gradients = {
        name: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
        for name, p in _trainable(model).items()
    }
    model.zero_grad(set_to_none=True)
    return gradients


def full_data_gradient(model: PrefixModel, data: Examples, batch_size: int = 64) -> DataGradient:
    """``g_D`` of the full training data ``data`` (retain and forget) at ``model``'s weights.

    Compute it on a model of the prefix whose editable stages include every stage a later pass
    may edit: a parameter's gradient does not depend on which others are trainable."""
    return data_statistics(model, data, batch_size).gradient


def iau(
    model: PrefixModel,
    forget: Examples,
    retain: Examples | None,
    config: IAUConfig | None = None,
    *,
    data_gradient: DataGradient | None = None,
) -> None:
    """One Adam step, in place, on grad L(retain) - grad L(forget).

    With ``data_gradient`` (of ``D``, retain and forget, at these same weights) the retain set is
    not passed through the model; ``retain`` may then be ``None``, or is only checked to hold
    ``n - m`` samples."""
    config = config or IAUConfig()
    forget.labelled("forget")
    params = _trainable(model)
    optimizer = torch.optim.Adam(list(params.values()), lr=config.lr)
    model.eval()
    optimizer.zero_grad(set_to_none=True)
    if data_gradient is None:
        if retain is None:
            raise UnlearningInputError("give the retain set, or the cached `data_gradient`")
        retain.labelled("retain")
        _accumulate(model, retain, 1.0, config.batch_size)
        _accumulate(model, forget, -1.0, config.batch_size)
    else:
        n, m = data_gradient.count, len(forget)
        if m >= n:
            raise UnlearningInputError("the forget set must be smaller than the cached data")
        if retain is not None and len(retain) != n - m:
            raise UnlearningInputError(
                f"retain ({len(retain)}) and forget ({m}) must make up the cached data ({n})"
            )
        missing = sorted(set(params) - set(data_gradient.gradients))
        if missing:
            raise ValueError(f"`data_gradient` has no entry for {', '.join(missing)}")
        g_forget = _gradients(model, forget, config.batch_size)
        with torch.no_grad():
            for name, p in params.items():
                g_data = data_gradient.gradients[name]
                p.grad = (g_data - g_forget[name]) * (n / (n - m))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@method(
    "iau",
    config=IAUConfig,
    tasks=ALL_TASKS,
    reads_statistics=True,
    description="one step on the retain gradient minus the forget gradient",
)
def run_iau(model: PrefixModel, data: PassData, config: IAUConfig) -> None:
    if data.statistics is not None:
        iau(model, data.forget, None, config, data_gradient=data.statistics.gradient)
    else:
        iau(model, data.forget, data.retain_set(), config)
