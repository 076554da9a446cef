"""Gradient ascent (GA): raise the task loss on the forget set for a bounded number of steps.

On a classifier or a regressor this is the "NegGrad" baseline of the unlearning literature
(with a retain term, ``retain_weight > 0``, "NegGrad+" of Kurmanji et al. 2023); on a causal LM
it is the gradient-ascent baseline of the LLM unlearning benchmarks (TOFU, MUSE,
OpenUnlearning), ascending the LM loss on the forget set's response tokens (with a retain term,
their "GradDiff"). One method for all three: the loss is the task's (:func:`task_loss`). Ascent
has no fixed point (the loss grows without bound), so the number of steps is the method's
budget: ``epochs`` over the forget set, at most ``max_steps`` steps when set.

The defaults (one epoch, Adam at 1e-3, batches of 32, no retain term) are those of the former
``baselines.TrainConfig`` pass, so a stored configuration of it configures this one."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearning.approx.data import Examples, task_loss
from unlearning.approx.forget_loop import LoopResult, LoopSettings, forget_loop
from unlearning.approx.model import PrefixModel
from unlearning.approx.registry import ALL_TASKS, PassData, method


@dataclass(frozen=True)
class GradientAscentConfig:
    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    max_steps: int = 0  # at most this many steps (0: every batch of every epoch)
    retain_weight: float = 0.0  # > 0: also descend the retain loss, times this (GradDiff)

    def __post_init__(self) -> None:
        _ = self.loop  # validates the loop's settings

    @property
    def loop(self) -> LoopSettings:
        return LoopSettings.of(self)


def gradient_ascent(
    model: PrefixModel,
    forget: Examples,
    config: GradientAscentConfig | None = None,
    *,
    retain: Examples | None = None,
) -> LoopResult:
    """GA, in place: minimise minus the forget set's task loss (plus the retain term)."""
    config = config or GradientAscentConfig()

    def ascend(_index: torch.Tensor, batch: Examples) -> torch.Tensor:
        assert batch.targets is not None
        return -task_loss(model(batch.encoded), batch.targets)

    return forget_loop(model, forget, retain, config.loop, ascend)


@method(
    "gradient_ascent",
    config=GradientAscentConfig,
    tasks=ALL_TASKS,
    description="GA (NegGrad): raises the task loss on the forget set (a causal LM's: on its "
    "response tokens) for a bounded number of steps; `retain_weight` adds retain-set descent "
    "(GradDiff, NegGrad+)",
)
def run_gradient_ascent(
    model: PrefixModel, data: PassData, config: GradientAscentConfig
) -> LoopResult:
    retain = data.retain_set() if config.retain_weight > 0 else None
    return gradient_ascent(model, data.forget, config, retain=retain)
