"""What an unlearning pass reads: encoded inputs with their targets, and the input checks.

The targets are class indices (long, one per row), regression values (float, one per row), or,
for a causal language model, next-token labels (long, one row of ``max_length`` per input:
:func:`unlearning.s3t.data.next_token_labels`, ``IGNORE`` off the response). The loss follows
from their shape: :func:`task_loss`; a sample's log-likelihood too: :func:`sample_logprob`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.nn import functional

from unlearning.s3t.backbone import Encoded
from unlearning.s3t.data import IGNORE
from unlearning.s3t.training import lm_loss


class UnlearningInputError(ValueError):
    """A method was given inputs it cannot use (an empty set, missing labels, a wrong task)."""


@dataclass(frozen=True)
class Examples:
    """Encoded inputs and their targets: class indices (long), regression values (float) or a
    causal LM's next-token labels (long, ``[rows, positions]``; the inputs carry the loss mask
    they come from)."""

    encoded: Encoded
    targets: torch.Tensor | None

    def __post_init__(self) -> None:
        if self.targets is None:
            return
        if self.targets.dim() == 2:
            if self.targets.is_floating_point() or self.targets.shape != self.encoded.inputs.shape:
                raise UnlearningInputError("give one row of next-token labels per input")
        elif self.targets.shape != (len(self.encoded),):
            raise UnlearningInputError("give one target per input")

    def __len__(self) -> int:
        return len(self.encoded)

    @property
    def classification(self) -> bool:
        return self.targets is not None and is_class_labels(self.targets)

    @property
    def causal_lm(self) -> bool:
        """Whether the targets are a causal LM's next-token labels."""
        return self.targets is not None and is_token_labels(self.targets)

    def labelled(self, name: str) -> torch.Tensor:
        """The targets, or a clear error for a set that has none."""
        if len(self) == 0:
            raise UnlearningInputError(f"the {name} set is empty")
        if self.targets is None:
            raise UnlearningInputError(f"the {name} set has no labels; this method needs them")
        return self.targets

    def indexed_batches(
        self, size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, Examples]]:
        """Batches with the indices of their rows in this set (on its device)."""
        # Shuffled on the CPU generator (the same order on every device), moved once.
        order = (
            torch.randperm(len(self), generator=generator) if generator else torch.arange(len(self))
        ).to(self.encoded.inputs.device)
        for start in range(0, len(self), size):
            index = order[start : start + size]
            targets = self.targets[index] if self.targets is not None else None
            yield index, Examples(self.encoded.rows(index), targets)

    def batches(self, size: int, generator: torch.Generator | None = None) -> Iterator[Examples]:
        for _, batch in self.indexed_batches(size, generator):
            yield batch

    @staticmethod
    def join(first: Examples, second: Examples) -> Examples:
        if (first.targets is None) != (second.targets is None):
            raise UnlearningInputError("both sets must have targets, or neither")
        a, b = first.encoded, second.encoded
        if (a.loss_mask is None) != (b.loss_mask is None):
            raise UnlearningInputError("both sets must have loss masks, or neither")
        loss_mask = (
            torch.cat([a.loss_mask, b.loss_mask])
            if a.loss_mask is not None and b.loss_mask is not None
            else None
        )
        encoded = Encoded(
            torch.cat([a.inputs, b.inputs]),
            torch.cat([a.attention_mask, b.attention_mask]),
            loss_mask,
        )
        targets = (
            torch.cat([first.targets, second.targets])
            if first.targets is not None and second.targets is not None
            else None
        )
        return Examples(encoded, targets)


def is_class_labels(targets: torch.Tensor) -> bool:
    return targets.dim() == 1 and not targets.is_floating_point()


def is_token_labels(targets: torch.Tensor) -> bool:
    return targets.dim() == 2 and not targets.is_floating_point()


def task_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy for class indices, mean squared error for values, and for next-token
    labels a causal LM's loss: the mean cross-entropy over the response tokens of the batch."""
    if is_token_labels(targets):
        return lm_loss(outputs, targets)
    if targets.is_floating_point():
        return functional.mse_loss(outputs.squeeze(-1), targets)
    return functional.cross_entropy(outputs, targets)


def sample_logprob(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per sample, the log-likelihood of its target: ``log p(y|x)`` of its class, or for a
    causal LM the sum over its response tokens (the sequence's log-likelihood). A regression
    model defines none (UnlearningInputError)."""
    if is_token_labels(targets):
        logprobs = functional.log_softmax(outputs.float(), dim=-1)
        keep = targets != IGNORE
        picked = logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (picked * keep).sum(-1)
    if is_class_labels(targets):
        logprobs = functional.log_softmax(outputs.float(), dim=-1)
        return logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    raise UnlearningInputError("a regression model defines no likelihood of its targets")
