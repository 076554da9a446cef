"""NPO, Negative Preference Optimization (Zhang, Lin, Bai, Mei; COLM 2024).

The loss on the forget set is

    L = -(2/beta) * E_forget[ log sigmoid( -beta * (log pi_theta(y|x) - log pi_ref(y|x)) ) ]

with ``pi_ref`` the model before the pass (its log-likelihoods are computed once, before the
first step) and ``log pi(y|x)`` a sample's sequence log-likelihood: for a causal LM the sum
over its response tokens (as the authors' code and OpenUnlearning sum the token losses), for a
classifier the log-probability of its class. At the start ``pi_theta = pi_ref`` and the gradient
is gradient ascent's on the summed loss; as a sample's likelihood falls below the reference its
weight ``sigmoid(beta * ratio)`` vanishes, which is what keeps NPO from GA's collapse. As in the
paper, a retain term (``retain_weight > 0``: plus the task loss on retain batches) is "NPO+RT".

It fits a causal LM and a classifier, not a regressor: a squared error defines no likelihood of
a target. The steps are bounded like gradient ascent's (``epochs``, ``max_steps``); the default
learning rate is the other LoRA passes' (the paper's 1e-5 is for full fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional

from unlearning.approx.data import (
    Examples,
    UnlearningInputError,
    is_class_labels,
    is_token_labels,
    sample_logprob,
)
from unlearning.approx.forget_loop import LoopResult, LoopSettings, forget_loop
from unlearning.approx.model import PrefixModel
from unlearning.approx.registry import PassData, method
from unlearning.s3t.config import Task


@dataclass(frozen=True)
class NPOConfig:
    beta: float = 0.1
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    max_steps: int = 0  # at most this many steps (0: every batch of every epoch)
    retain_weight: float = 0.0  # > 0: NPO+RT, plus the retain loss times this

    def __post_init__(self) -> None:
        if not self.beta > 0 or self.beta == float("inf"):
            raise ValueError("`beta` must be a positive number")
        _ = self.loop  # validates the loop's settings

    @property
    def loop(self) -> LoopSettings:
        return LoopSettings.of(self)


def log_likelihoods(model: PrefixModel, examples: Examples, batch_size: int) -> torch.Tensor:
    """Each sample's log-likelihood of its target at ``model``'s weights, in order."""
    model.eval()
    parts = []
    with torch.no_grad():
        for batch in examples.batches(batch_size):
            assert batch.targets is not None
            parts.append(sample_logprob(model(batch.encoded), batch.targets))
    return torch.cat(parts)


def npo_loss(current: torch.Tensor, reference: torch.Tensor, beta: float) -> torch.Tensor:
    """``-(2/beta) * mean(log sigmoid(-beta * (current - reference)))``."""
    return -(2.0 / beta) * functional.logsigmoid(-beta * (current - reference)).mean()


def npo(
    model: PrefixModel,
    forget: Examples,
    config: NPOConfig | None = None,
    *,
    retain: Examples | None = None,
) -> LoopResult:
    """NPO, in place, against the model as it is now."""
    config = config or NPOConfig()
    labels = forget.labelled("forget")
    if not (is_class_labels(labels) or is_token_labels(labels)):
        raise UnlearningInputError("NPO needs a classification or causal_lm model")
    reference = log_likelihoods(model, forget, config.batch_size)

    def loss(index: torch.Tensor, batch: Examples) -> torch.Tensor:
        assert batch.targets is not None
        current = sample_logprob(model(batch.encoded), batch.targets)
        return npo_loss(current, reference[index], config.beta)

    return forget_loop(model, forget, retain, config.loop, loss)


@method(
    "npo",
    config=NPOConfig,
    tasks={Task.CLASSIFICATION, Task.CAUSAL_LM},
    needs="a likelihood of each sample's target (a class or a response)",
    description="NPO (Zhang et al.): lowers the forget set's likelihood relative to the model "
    "before the pass, with weights that vanish once below it; `retain_weight` adds retain "
    "descent (NPO+RT)",
)
def run_npo(model: PrefixModel, data: PassData, config: NPOConfig) -> LoopResult:
    retain = data.retain_set() if config.retain_weight > 0 else None
    return npo(model, data.forget, config, retain=retain)
