"""What SSD and IAU need of a prefix's full training data, computed once and stored.

SSD compares the forget set's importance of each parameter with its importance on the full
training data ``D``; IAU steps along ``g_R - g_F``, which it derives from the gradient of the mean
loss over ``D`` (:mod:`unlearning.approx.iau`). Both depend only on the trained prefix and ``D``,
not on what is deleted, so :func:`data_statistics` computes them in one gradient pass right after
training and every later deletion reads them: a pass then touches only the forget set.

The statistics are of one prefix's weights and one version of its data. They are valid for a
deletion only while ``D`` is exactly that deletion's forget set plus what remains (no other
sample left the slices since): the caller checks that, and :func:`check_count` the size.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from unlearning.approx.data import Examples, UnlearningInputError, is_class_labels, task_loss
from unlearning.approx.model import PrefixModel

FORMAT = "pass-statistics/1"
#: SSD's full-data loader in the authors' scripts; IAU's gradient does not depend on it.
DATA_BATCH_SIZE = 64


@dataclass(frozen=True)
class DataGradient:
    """``g_D``: the gradient of the mean loss over a prefix's full training data, per trainable
    parameter name, at the prefix's trained weights; ``count`` is ``n = |D|``."""

    gradients: dict[str, torch.Tensor]
    count: int


@dataclass(frozen=True)
class PassStatistics:
    """Per trainable parameter of a prefix (all stages editable): SSD's importance on ``D`` (the
    mean over batches of the squared gradient of the batch-mean loss) and IAU's ``g_D``; per
    sample of ``D`` what the head reads (``features``) and its target; the batch size used.
    A causal LM has no trained head: its ``features`` are empty (``[n, 0]``) and its targets
    are the next-token labels."""

    importance: dict[str, torch.Tensor]
    gradient: DataGradient
    features: torch.Tensor
    targets: torch.Tensor
    batch_size: int

    @property
    def count(self) -> int:
        return self.gradient.count

    @property
    def class_counts(self) -> dict[int, int]:
        """``D``'s samples per class (none for regression values or a causal LM's labels)."""
        if not is_class_labels(self.targets):
            return {}
        return dict(sorted(Counter(int(t) for t in self.targets.tolist()).items()))

    def check_count(self, forget: int) -> None:
        """The statistics can stand for ``forget`` samples plus the rest only if larger."""
        if forget >= self.count:
            raise UnlearningInputError(
                f"the forget set ({forget}) must be smaller than the cached data ({self.count})"
            )

    def to(self, device: torch.device | str) -> PassStatistics:
        return PassStatistics(
            {name: t.to(device) for name, t in self.importance.items()},
            DataGradient(
                {name: t.to(device) for name, t in self.gradient.gradients.items()},
                self.gradient.count,
            ),
            self.features.to(device),
            self.targets.to(device),
            self.batch_size,
        )

    def to_bytes(self) -> bytes:
        tensors = {f"importance.{k}": v for k, v in self.importance.items()}
        tensors |= {f"gradient.{k}": v for k, v in self.gradient.gradients.items()}
        tensors |= {"data.features": self.features, "data.targets": self.targets}
        tensors = {k: v.detach().contiguous().cpu() for k, v in sorted(tensors.items())}
        meta = {"format": FORMAT, "count": self.count, "batch_size": self.batch_size}
        # One metadata key, so the bytes (and the content address) depend on the values alone.
        return bytes(save_safetensors(tensors, metadata={"stats": json.dumps(meta)}))

    @classmethod
    def from_bytes(cls, data: bytes) -> PassStatistics:
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
        meta = json.loads(header.get("__metadata__", {}).get("stats", "{}"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"not a pass-statistics artifact (format {meta.get('format')!r})")
        tensors = load_safetensors(data)
        part = {"importance": {}, "gradient": {}, "data": {}}  # type: dict[str, dict[str, torch.Tensor]]
        for key, value in tensors.items():
            kind, name = key.split(".", 1)
            part[kind][name] = value
        return cls(
            part["importance"],
            DataGradient(part["gradient"], int(meta["count"])),
            part["data"]["features"],
            part["data"]["targets"],
            int(meta["batch_size"]),
        )


def data_statistics(
    model: PrefixModel, data: Examples, batch_size: int = DATA_BATCH_SIZE
) -> PassStatistics:
    """One gradient pass over ``data`` (in its order, ``batch_size`` per batch) at ``model``'s
    weights. Build ``model`` with every stage editable, so that any later pass finds an entry for
    each parameter it edits (a parameter's gradient does not depend on which others train).

    The importance is computed exactly as :func:`unlearning.approx.ssd.importance` does, so a
    pass reading these statistics equals one computing them from ``data``."""
    targets = data.labelled("training data")
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    squares = {name: torch.zeros_like(p) for name, p in params.items()}
    gradient = {name: torch.zeros_like(p) for name, p in params.items()}
    features: list[torch.Tensor] = []
    batches, n = 0, len(data)
    model.eval()
    for batch in data.batches(batch_size):
        model.zero_grad(set_to_none=True)
        assert batch.targets is not None
        if model.causal:  # no head, no features: the loss is on next-token logits
            features.append(torch.zeros((len(batch), 0), device=batch.targets.device))
            outputs = model(batch.encoded)
        else:
            pooled = model.pooled(batch.encoded)  # model(x) is head(pooled(x)): the same graph
            features.append(pooled.detach())
            outputs = model.head(pooled)
        task_loss(outputs, batch.targets).backward()  # type: ignore[no-untyped-call]
        for name, p in params.items():
            if p.grad is not None:
                squares[name] += p.grad.detach() ** 2
                gradient[name] += p.grad.detach() * (len(batch) / n)
        batches += 1
    model.zero_grad(set_to_none=True)
    return PassStatistics(
        {name: total / batches for name, total in squares.items()},
        DataGradient(gradient, n),
        torch.cat(features),
        targets.detach().clone(),
        batch_size,
    )
