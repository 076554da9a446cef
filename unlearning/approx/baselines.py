"""The baselines unlearning papers compare with: fine-tuning on the retain set (FT, any task:
it reads only the task's loss) and random labels on the forget set (RL, with the retain set;
classification only). Gradient ascent, the third, is :mod:`unlearning.approx.gradient_ascent`
(with a retain term and a step bound, for causal LMs too)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearning.approx.data import Examples, UnlearningInputError, task_loss
from unlearning.approx.model import PrefixModel
from unlearning.approx.registry import ALL_TASKS, PassData, method
from unlearning.s3t.config import Task


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError("`epochs` must be at least 1")
        if self.lr <= 0:
            raise ValueError("`lr` must be positive")
        if self.batch_size < 1:
            raise ValueError("`batch_size` must be at least 1")


def _train(model: PrefixModel, examples: Examples, config: TrainConfig, sign: float) -> None:
    generator = torch.Generator().manual_seed(config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    model.train()
    for _ in range(config.epochs):
        for batch in examples.batches(config.batch_size, generator):
            assert batch.targets is not None
            optimizer.zero_grad(set_to_none=True)
            (sign * task_loss(model(batch.encoded), batch.targets)).backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    model.eval()


def finetune(model: PrefixModel, retain: Examples, config: TrainConfig | None = None) -> None:
    """FT: train on the retain set only, so that the forget set fades."""
    retain.labelled("retain")
    _train(model, retain, config or TrainConfig(), 1.0)


def random_labels(
    model: PrefixModel,
    forget: Examples,
    retain: Examples,
    n_labels: int,
    config: TrainConfig | None = None,
) -> None:
    """RL: train on the forget set relabelled at random (never its true label) and the retain
    set as it is. Classification only."""
    config = config or TrainConfig()
    labels = forget.labelled("forget")
    retain.labelled("retain")
    if labels.is_floating_point() or n_labels < 2:
        raise UnlearningInputError("random labels need a classification model")
    generator = torch.Generator().manual_seed(config.seed)
    shift = torch.randint(1, n_labels, labels.shape, generator=generator).to(labels.device)
    relabelled = Examples(forget.encoded, (labels + shift) % n_labels)
    _train(model, Examples.join(relabelled, retain), config, 1.0)


@method(
    "finetune", config=TrainConfig, tasks=ALL_TASKS, description="FT: trains on the retain set only"
)
def run_finetune(model: PrefixModel, data: PassData, config: TrainConfig) -> None:
    finetune(model, data.retain_set(), config)


@method(
    "random_labels",
    config=TrainConfig,
    tasks={Task.CLASSIFICATION},
    needs="class labels to draw wrong ones from",
    description="RL: the forget set relabelled at random (never its own label), trained with "
    "the retain set",
)
def run_random_labels(model: PrefixModel, data: PassData, config: TrainConfig) -> None:
    random_labels(model, data.forget, data.retain_set(), data.n_labels, config)
