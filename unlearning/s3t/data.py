"""A shard's training data as tensors, and where the hidden states entering a layer come from."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from unlearning.s3t.backbone import Backbone, Encoded
from unlearning.s3t.config import S3TConfig, Task


@dataclass(frozen=True)
class TrainingSample:
    """One training sample, already placed in its shard and slice."""

    id: str
    shard: int
    slice: int
    text: str
    target: float


@dataclass(frozen=True)
class ShardData:
    """A shard's samples, sorted by id, tokenised once."""

    ids: tuple[str, ...]
    slices: torch.Tensor  # [N] long
    targets: torch.Tensor  # [N] long (classification) or float (regression)
    encoded: Encoded

    @classmethod
    def build(
        cls, backbone: Backbone, config: S3TConfig, samples: Sequence[TrainingSample]
    ) -> ShardData:
        ordered = sorted(samples, key=lambda s: s.id)
        for before, after in itertools.pairwise(ordered):
            if before.id == after.id:
                raise ValueError(f"duplicate sample id {before.id!r}")
        if config.task == Task.CLASSIFICATION:
            for sample in ordered:
                if sample.target != int(sample.target) or not 0 <= sample.target < config.n_labels:
                    last = config.n_labels - 1
                    raise ValueError(
                        f"sample {sample.id!r}: label {sample.target!r} is not in 0..{last}"
                    )
            targets = torch.tensor([int(s.target) for s in ordered], dtype=torch.long)
        else:
            targets = torch.tensor([float(s.target) for s in ordered], dtype=torch.float32)
        return cls(
            ids=tuple(s.id for s in ordered),
            slices=torch.tensor([s.slice for s in ordered], dtype=torch.long),
            targets=targets,
            encoded=backbone.encode([s.text for s in ordered], config.max_length),
        )

    def rows_of(self, slices: Iterable[int]) -> torch.Tensor:
        """Row indices (ascending, so in id order) of the samples in ``slices``."""
        wanted = torch.tensor(sorted(set(slices)), dtype=torch.long)
        return torch.nonzero(torch.isin(self.slices, wanted)).flatten()


class HiddenStates(Protocol):
    """Plain-backbone hidden states entering layer ``depth`` for some rows of a shard."""

    def at(self, depth: int, rows: torch.Tensor) -> torch.Tensor: ...


class LiveHiddenStates:
    """No caching: every request runs the embeddings and the frozen layers below ``depth``."""

    def __init__(self, backbone: Backbone, encoded: Encoded) -> None:
        self.backbone = backbone
        self.encoded = encoded

    def at(self, depth: int, rows: torch.Tensor) -> torch.Tensor:
        return self.backbone.hidden_at(self.encoded.rows(rows), depth)


class CachedHiddenStates:
    """Frozen-bottom caching.

    The layers below a trained block are plain backbone, so a sample's state entering the block
    never changes: it is computed once per shard and depth (in fixed chunks, in row order, so the
    result depends only on the shard's samples) and every stage, epoch and sequence reuses it.
    """

    CHUNK = 64

    def __init__(self, backbone: Backbone, encoded: Encoded) -> None:
        self.backbone = backbone
        self.encoded = encoded
        self._states: dict[int, torch.Tensor] = {}

    def at(self, depth: int, rows: torch.Tensor) -> torch.Tensor:
        if depth not in self._states:
            self._states[depth] = self._compute(depth)
        return self._states[depth][rows]

    def _compute(self, depth: int) -> torch.Tensor:
        below = [d for d in self._states if d < depth]
        start = max(below, default=0)
        chunks = []
        for first in range(0, len(self.encoded), self.CHUNK):
            rows = torch.arange(first, min(first + self.CHUNK, len(self.encoded)))
            part = self.encoded.rows(rows)
            hidden = self._states[start][rows] if below else self.backbone.embed(part)
            with torch.no_grad():
                chunks.append(self.backbone.run(hidden, part.attention_mask, start, depth))
        if not chunks:
            return torch.empty(0, self.encoded.input_ids.shape[1], self.backbone.hidden_size)
        return torch.cat(chunks)
