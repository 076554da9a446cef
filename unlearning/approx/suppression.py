"""Whole-class passes: when a deletion removes every sample of a class.

**Suppression** mutes the class's output.

A model retrained without any sample of class ``c`` still has a head row for ``c``, but training
drives its logit far below the others: it predicts ``c`` for nothing, and the samples it would
have put in ``c`` fall to their next best class. Suppression reaches that state at once: the
head's row for each class whose every training sample is in the forget set gets zero weights and
a bias ``logit`` far below any other, so ``c`` is never predicted and the forget samples'
loss is high (they look like non-members). Nothing else changes; the exact retrain follows.

It is the cheapest whole-class pass (no gradient, no data pass), but a class muted outright
is not what a retrain looks like to a membership attack: the forgotten samples' label gets
probability 0, where a retrained model gives them the small probabilities of unseen data.

**Head refit** (our design, measured in ``bench/service_passes.py``) does to the head what a
retrain without the class does to the whole model, on the head alone. A model that never saw
the class puts its samples in the remaining class they look most like; so each forgotten
sample is relabelled with its best remaining class (by the current head), the removed classes'
rows start from zero, and the head is fine-tuned on what it reads of every sample (the pooled
features stored with the chain's pass statistics): the class's logit falls as it does when the
class was never seen, without the outright zero probability a membership attack notices, and
the other classes adjust to its absence. It touches no encoder weight and reads no input (text or
image): a few epochs of a linear layer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch.nn import functional

from unlearning.approx.data import Examples, UnlearningInputError
from unlearning.approx.model import PrefixModel
from unlearning.approx.registry import PassData, method
from unlearning.approx.ssd import authors_order
from unlearning.s3t.config import Task


@dataclass(frozen=True)
class SuppressionConfig:
    logit: float = -1e4  # the suppressed classes' bias

    def __post_init__(self) -> None:
        if self.logit >= 0:
            raise ValueError("`logit` must be negative")


@dataclass(frozen=True)
class RefitConfig:
    epochs: int = 5
    lr: float = 2e-3
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("`epochs` and `batch_size` must be at least 1")
        if self.lr <= 0:
            raise ValueError("`lr` must be positive")


def remaining_counts(targets: torch.Tensor, forget: Examples) -> Counter[int]:
    """Per class, the samples of the training data (``targets``, forget set included) that stay
    once ``forget`` leaves."""
    counts = Counter(int(c) for c in targets.tolist())
    counts.subtract(Counter(int(c) for c in forget.labelled("forget").tolist()))
    return counts


def removed_classes(forget: Examples, remaining: Mapping[int, int]) -> list[int]:
    """The classes of the forget set that no remaining training sample has."""
    labels = forget.labelled("forget")
    if labels.is_floating_point():
        raise UnlearningInputError("class suppression needs class labels")
    return sorted({int(c) for c in labels.tolist()} - {c for c, n in remaining.items() if n > 0})


def suppress_classes(
    model: PrefixModel,
    forget: Examples,
    remaining: Mapping[int, int],
    config: SuppressionConfig | None = None,
) -> list[int]:
    """Mute, in place, the classes the forget set removes entirely; ``remaining``: the class
    counts of the retain set. Returns those classes; refuses a forget set that removes none."""
    config = config or SuppressionConfig()
    classes = removed_classes(forget, remaining)
    if not classes:
        raise UnlearningInputError(
            "no class leaves the training data with this forget set; suppression needs one"
        )
    with torch.no_grad():
        rows = torch.tensor(classes, device=model.head.weight.device)
        model.head.weight[rows] = 0.0
        model.head.bias[rows] = config.logit
    return classes


def pooled_features(
    model: PrefixModel, examples: Examples, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """What the head reads of each example, with its target (no gradient)."""
    targets = examples.labelled("training data")
    with torch.no_grad():
        model.eval()
        features = [model.pooled(batch.encoded) for batch in examples.batches(batch_size)]
    return torch.cat(features), targets


def refit_head(
    model: PrefixModel,
    forget: Examples,
    features: torch.Tensor,
    targets: torch.Tensor,
    config: RefitConfig | None = None,
) -> list[int]:
    """Reset the head's rows of the classes the forget set removes, relabel their samples with
    their best remaining class, then fine-tune the head (in place) on every sample's features.
    ``features`` and ``targets``: the whole training data's (forget included), at the model's
    weights. Every forget sample must belong to a removed class; returns those classes."""
    config = config or RefitConfig()
    labels = forget.labelled("forget")
    if labels.is_floating_point():
        raise UnlearningInputError("a head refit needs class labels")
    classes = removed_classes(forget, remaining_counts(targets, forget))
    if not classes or {int(c) for c in labels.tolist()} - set(classes):
        raise UnlearningInputError("a head refit needs a forget set of whole classes")
    head = model.head
    rows = torch.tensor(classes, device=head.weight.device)
    inputs = features.detach()
    with torch.no_grad():
        removed = torch.isin(targets, rows)
        logits = head(inputs)
        logits[:, rows] = -torch.inf
        outputs = torch.where(removed, logits.argmax(dim=1), targets)
        head.weight[rows] = 0.0
        head.bias[rows] = 0.0
    optimizer = torch.optim.Adam(head.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(config.epochs):
        order = torch.randperm(len(inputs), generator=generator).to(inputs.device)
        for start in range(0, len(inputs), config.batch_size):
            index = order[start : start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            functional.cross_entropy(head(inputs[index]), outputs[index]).backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return classes


@method(
    "suppress_class",
    config=SuppressionConfig,
    tasks={Task.CLASSIFICATION},
    needs="a classifier head's rows, one per class",
    reads_statistics=True,
    forgets="whole_classes",
    description="whole classes: the removed classes' head rows get zero weights and a bias of "
    "-1e4, nothing else changes",
)
def run_suppress_class(model: PrefixModel, data: PassData, config: SuppressionConfig) -> list[int]:
    if data.statistics is not None:
        remaining = remaining_counts(data.statistics.targets, data.forget)
    else:
        targets = data.retain_set().targets
        remaining = Counter(int(c) for c in (targets.tolist() if targets is not None else []))
    return suppress_classes(model, data.forget, remaining, config)


@method(
    "refit_head",
    config=RefitConfig,
    tasks={Task.CLASSIFICATION},
    needs="class labels and a classifier head refit on stored features",
    reads_statistics=True,
    forgets="whole_classes",
    description="whole classes (our design): forgotten samples relabelled with their best "
    "remaining class, removed rows reset, the head alone refit on the stored features",
)
def run_refit_head(model: PrefixModel, data: PassData, config: RefitConfig) -> list[int]:
    if data.statistics is not None:
        features, targets = data.statistics.features, data.statistics.targets
    else:
        features, targets = pooled_features(model, authors_order(data.forget, data.retain_set()))
    return refit_head(model, data.forget, features, targets, config)
