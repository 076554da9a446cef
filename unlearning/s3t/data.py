"""A shard's training data as tensors, and where the hidden states entering a layer come from."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from unlearning.families import Content
from unlearning.s3t.backbone import Backbone, Encoded
from unlearning.s3t.config import S3TConfig, Task


@dataclass(frozen=True)
class TrainingSample:
    """One training sample, already placed in its shard and slice: a text, an encoded image
    (bytes) for an image model, or a conversation for a causal LM (whose target is unused)."""

    id: str
    shard: int
    slice: int
    content: Content
    target: float = 0.0


@dataclass(frozen=True)
class ShardData:
    """A shard's samples, sorted by id, tokenised once, on the backbone's device."""

    ids: tuple[str, ...]
    slices: torch.Tensor  # [N] long
    #: [N] long (classification), [N] float (regression), or [N, max_length] long next-token
    #: labels (causal LM: ``IGNORE`` where a position's next token is not in the loss)
    targets: torch.Tensor
    encoded: Encoded

    @classmethod
    def build(
        cls, backbone: Backbone, config: S3TConfig, samples: Sequence[TrainingSample]
    ) -> ShardData:
        ordered = sorted(samples, key=lambda s: s.id)
        for before, after in itertools.pairwise(ordered):
            if before.id == after.id:
                raise ValueError(f"duplicate sample id {before.id!r}")
        device = backbone.device
        encoded = backbone.encode([s.content for s in ordered], config.max_length)
        if config.task == Task.CAUSAL_LM:
            targets = next_token_labels(encoded)
        elif config.task == Task.CLASSIFICATION:
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
            slices=torch.tensor([s.slice for s in ordered], dtype=torch.long, device=device),
            targets=targets.to(device),
            encoded=encoded,
        )

    def rows_of(self, slices: Iterable[int]) -> torch.Tensor:
        """Row indices (ascending, so in id order) of the samples in ``slices``."""
        wanted = torch.tensor(sorted(set(slices)), dtype=torch.long, device=self.slices.device)
        return torch.nonzero(torch.isin(self.slices, wanted)).flatten()


#: The label of a position whose next token is not in the loss (cross-entropy's ignore index).
IGNORE = -100


def next_token_labels(encoded: Encoded) -> torch.Tensor:
    """Per position, the next token where it is in the loss, else :data:`IGNORE`."""
    if encoded.loss_mask is None:
        raise ValueError("a causal LM's inputs need a loss mask")
    labels = torch.full_like(encoded.inputs, IGNORE)
    keep = encoded.loss_mask[:, 1:].bool() & encoded.attention_mask[:, 1:].bool()
    labels[:, :-1] = torch.where(keep, encoded.inputs[:, 1:], IGNORE)
    return labels


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
    ``depths`` names the depths that will be asked for: computing one keeps every named depth it
    passes on the way, so top-down stages never run the bottom layers twice. Memory: depths x
    samples x max_length x hidden x 4 bytes (4 x 10,000 x 64 x 384 x 4 B = 3.9 GB for MiniLM);
    ``S3TEngine(cache_hidden_states=False)`` trades it for time; a half-precision base's states
    are held in its dtype (half the bytes).
    """

    CHUNK = 64

    def __init__(self, backbone: Backbone, encoded: Encoded, depths: Iterable[int] = ()) -> None:
        self.backbone = backbone
        self.encoded = encoded
        self.depths = set(depths)
        self._states: dict[int, torch.Tensor] = {}

    def at(self, depth: int, rows: torch.Tensor) -> torch.Tensor:
        if depth not in self._states:
            self._compute(depth)
        return self._states[depth][rows]

    def _compute(self, depth: int) -> None:
        start = max((d for d in self._states if d < depth), default=0)
        keep = sorted(
            d for d in self.depths | {depth} if start <= d <= depth and d not in self._states
        )
        parts: dict[int, list[torch.Tensor]] = {d: [] for d in keep}
        for first in range(0, len(self.encoded), self.CHUNK):
            rows = torch.arange(
                first, min(first + self.CHUNK, len(self.encoded)), device=self.backbone.device
            )
            chunk = self.encoded.rows(rows)
            hidden = (
                self._states[start][rows] if start in self._states else self.backbone.embed(chunk)
            )
            reached = start
            with torch.no_grad():
                for d in keep:
                    hidden = self.backbone.run(hidden, chunk.attention_mask, reached, d)
                    parts[d].append(hidden)
                    reached = d
        width = self.encoded.attention_mask.shape[1]
        for d, chunks in parts.items():
            self._states[d] = (
                torch.cat(chunks)
                if chunks
                else torch.empty(
                    0,
                    width,
                    self.backbone.hidden_size,
                    device=self.backbone.device,
                    dtype=self.backbone.dtype,
                )
            )
