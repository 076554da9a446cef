"""IAU, Influence Approximation Unlearning (Liu, Wu, Lian, Chen, 2025).

As in the official ``IAU_unlearn.py``: one optimiser step (Adam, lr 1e-3) along the accumulated
gradient of the mean retain loss minus the mean forget loss. Its accuracy relies on the original
model having been trained with a gradient-norm penalty (:func:`gradient_norm_penalty`), which the
S3T trainer applies when ``S3TConfig.gradient_penalty`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearning.approx.data import Examples, task_loss
from unlearning.approx.model import PrefixModel
from unlearning.gradient_penalty import gradient_norm_penalty

__all__ = ["IAUConfig", "gradient_norm_penalty", "iau"]


@dataclass(frozen=True)
class IAUConfig:
    lr: float = 1e-3
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError("`lr` must be positive")
        if self.batch_size < 1:
            raise ValueError("`batch_size` must be at least 1")


def _accumulate(model: PrefixModel, examples: Examples, sign: float, batch_size: int) -> None:
    """Add ``sign * grad(mean loss over examples)`` to the parameters' gradients."""
    n = len(examples)
    for batch in examples.batches(batch_size):
        assert batch.targets is not None
        loss = task_loss(model(batch.encoded), batch.targets) * (len(batch) / n)
        (sign * loss).backward()  # type: ignore[no-untyped-call]


def iau(
    model: PrefixModel, forget: Examples, retain: Examples, config: IAUConfig | None = None
) -> None:
    """One Adam step, in place, on grad L(retain) - grad L(forget)."""
    config = config or IAUConfig()
    forget.labelled("forget")
    retain.labelled("retain")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    model.eval()
    optimizer.zero_grad(set_to_none=True)
    _accumulate(model, retain, 1.0, config.batch_size)
    _accumulate(model, forget, -1.0, config.batch_size)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
