"""Class suppression: when a deletion removes every sample of a class, mute that class's output.

A model retrained without any sample of class ``c`` still has a head row for ``c``, but training
drives its logit far below the others: it predicts ``c`` for nothing, and the samples it would
have put in ``c`` fall to their next best class. Suppression reaches that state at once: the
head's row for each class whose every training sample is in the forget set gets zero weights and
a bias ``logit`` far below any other, so ``c`` is never predicted and the forget samples'
loss is high (they look like non-members). Nothing else changes; the exact retrain follows.

It is the cheapest whole-class pass (no gradient, no data pass) and, measured on AG News with
MiniLM (``bench/service_passes.py``), the closest to the retrain of the cheap candidates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from unlearning.approx.data import Examples, UnlearningInputError
from unlearning.approx.model import PrefixModel


@dataclass(frozen=True)
class SuppressionConfig:
    logit: float = -1e4  # the suppressed classes' bias

    def __post_init__(self) -> None:
        if self.logit >= 0:
            raise ValueError("`logit` must be negative")


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
