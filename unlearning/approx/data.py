"""What an unlearning pass reads: encoded inputs with their targets, and the input checks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.nn import functional

from unlearning.s3t.backbone import Encoded


class UnlearningInputError(ValueError):
    """A method was given inputs it cannot use (an empty set, missing labels, a wrong task)."""


@dataclass(frozen=True)
class Examples:
    """Encoded inputs and their targets: class indices (long) or regression values (float)."""

    encoded: Encoded
    targets: torch.Tensor | None

    def __post_init__(self) -> None:
        if self.targets is not None and self.targets.shape != (len(self.encoded),):
            raise UnlearningInputError("give one target per input")

    def __len__(self) -> int:
        return len(self.encoded)

    @property
    def classification(self) -> bool:
        return self.targets is not None and not self.targets.is_floating_point()

    def labelled(self, name: str) -> torch.Tensor:
        """The targets, or a clear error for a set that has none."""
        if len(self) == 0:
            raise UnlearningInputError(f"the {name} set is empty")
        if self.targets is None:
            raise UnlearningInputError(f"the {name} set has no labels; this method needs them")
        return self.targets

    def batches(self, size: int, generator: torch.Generator | None = None) -> Iterator[Examples]:
        # Shuffled on the CPU generator (the same order on every device), moved once.
        order = (
            torch.randperm(len(self), generator=generator) if generator else torch.arange(len(self))
        ).to(self.encoded.inputs.device)
        for start in range(0, len(self), size):
            index = order[start : start + size]
            targets = self.targets[index] if self.targets is not None else None
            yield Examples(self.encoded.rows(index), targets)

    @staticmethod
    def join(first: Examples, second: Examples) -> Examples:
        if (first.targets is None) != (second.targets is None):
            raise UnlearningInputError("both sets must have targets, or neither")
        encoded = Encoded(
            torch.cat([first.encoded.inputs, second.encoded.inputs]),
            torch.cat([first.encoded.attention_mask, second.encoded.attention_mask]),
        )
        targets = (
            torch.cat([first.targets, second.targets])
            if first.targets is not None and second.targets is not None
            else None
        )
        return Examples(encoded, targets)


def task_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy for class indices, mean squared error for values."""
    if targets.is_floating_point():
        return functional.mse_loss(outputs.squeeze(-1), targets)
    return functional.cross_entropy(outputs, targets)
