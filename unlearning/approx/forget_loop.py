"""The training loop of the methods that push the forget set away (gradient ascent, NPO):
Adam on the editable parameters, the forget set in shuffled batches for a bounded number of
steps, each step optionally adding a retain-set descent term (``retain_weight`` times the task
loss on the next retain batch, the retain set cycled in shuffled batches of its own)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from unlearning.approx.data import Examples, UnlearningInputError, task_loss
from unlearning.approx.model import PrefixModel

#: The loss of one forget batch: given the batch's row indices in the forget set and the batch.
ForgetLoss = Callable[[torch.Tensor, Examples], torch.Tensor]


class LoopConfig(Protocol):
    """The fields a forget-set method's config shares with :class:`LoopSettings`."""

    @property
    def epochs(self) -> int: ...
    @property
    def lr(self) -> float: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def max_steps(self) -> int: ...
    @property
    def retain_weight(self) -> float: ...


@dataclass(frozen=True)
class LoopSettings:
    """What every forget-set loop reads of its method's config."""

    epochs: int
    lr: float
    batch_size: int
    seed: int
    max_steps: int  # 0: every batch of every epoch
    retain_weight: float  # 0: no retain term

    @classmethod
    def of(cls, config: LoopConfig) -> LoopSettings:
        """The loop settings of a method's config (which validates them by building these)."""
        return cls(
            config.epochs,
            config.lr,
            config.batch_size,
            config.seed,
            config.max_steps,
            config.retain_weight,
        )

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError("`epochs` must be at least 1")
        if not self.lr > 0:
            raise ValueError("`lr` must be positive")
        if self.batch_size < 1:
            raise ValueError("`batch_size` must be at least 1")
        if self.max_steps < 0:
            raise ValueError("`max_steps` must be 0 (no limit but the epochs) or more")
        if not self.retain_weight >= 0:
            raise ValueError("`retain_weight` must be 0 or more")


@dataclass(frozen=True)
class LoopResult:
    steps: int  # optimiser steps taken
    first_loss: float  # the first step's total loss
    last_loss: float  # the last step's


def _retain_batches(retain: Examples, size: int, seed: int) -> Iterator[Examples]:
    """The retain set in shuffled batches, reshuffled on every pass, without end."""
    generator = torch.Generator().manual_seed(seed + 1)
    while True:
        yield from retain.batches(size, generator)


def forget_loop(
    model: PrefixModel,
    forget: Examples,
    retain: Examples | None,
    settings: LoopSettings,
    forget_loss: ForgetLoss,
) -> LoopResult:
    """Minimise ``forget_loss`` (plus the retain term) over the forget set, in place."""
    forget.labelled("forget")
    retained: Iterator[Examples] | None = None
    if settings.retain_weight > 0:
        if retain is None:
            raise UnlearningInputError("a retain term (`retain_weight` > 0) needs the retain set")
        retain.labelled("retain")
        retained = _retain_batches(retain, settings.batch_size, settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=settings.lr)
    losses: list[float] = []
    model.train()
    for _ in range(settings.epochs):
        for index, batch in forget.indexed_batches(settings.batch_size, generator):
            if settings.max_steps and len(losses) >= settings.max_steps:
                break
            loss = forget_loss(index, batch)
            if retained is not None:
                other = next(retained)
                assert other.targets is not None
                loss = loss + settings.retain_weight * task_loss(
                    model(other.encoded), other.targets
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            losses.append(float(loss.detach()))
    model.eval()
    return LoopResult(len(losses), losses[0], losses[-1])
