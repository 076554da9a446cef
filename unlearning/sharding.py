"""Deterministic placement of samples on shards and slices, and how balanced the slices are.

The placement must be the same in every process and every release, so it uses SHA-256 of the
model id and an identifier, never Python's salted ``hash``. Two policies:

- ``sample``: each sample by its own id, so samples spread uniformly over every shard and slice;
- ``subject``: every sample of one data subject by the subject (a keyed hash of the subject
  under the model), so a subject lives in one shard and one slice and a subject's deletion cuts
  one slice of one shard, not every order of every shard. Samples without a subject fall back
  to their id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from enum import StrEnum
from typing import NamedTuple


class Placement(NamedTuple):
    shard: int
    slice: int


class PlacementPolicy(StrEnum):
    sample = "sample"
    subject = "subject"


#: Slices further than this factor from the mean size are reported as unbalanced ...
IMBALANCE_FACTOR = 2.0
#: ... once the mean has at least this many samples (small models are noisy by nature).
IMBALANCE_MIN_MEAN = 10.0


def assign(model_key: str, external_id: str, n_shards: int, n_slices: int) -> Placement:
    """Shard and slice of a sample: independent, uniform and stable for a given key."""
    if n_shards < 1 or n_slices < 1:
        raise ValueError("`n_shards` and `n_slices` must be at least 1")
    digest = hashlib.sha256(f"{model_key}\x1f{external_id}".encode()).digest()
    shard = int.from_bytes(digest[:8], "big") % n_shards
    slice_ = int.from_bytes(digest[8:16], "big") % n_slices
    return Placement(shard, slice_)


def place(
    model_key: str,
    external_id: str,
    subject_id: str | None,
    n_shards: int,
    n_slices: int,
    policy: PlacementPolicy | str = PlacementPolicy.sample,
) -> Placement:
    """Shard and slice of a sample under ``policy``."""
    if PlacementPolicy(policy) is PlacementPolicy.subject and subject_id is not None:
        # Another key than the samples', so a subject never shares a hash with a sample id.
        return assign(f"{model_key}\x1fsubject", subject_id, n_shards, n_slices)
    return assign(model_key, external_id, n_shards, n_slices)


def unbalanced_slices(sizes: Sequence[Sequence[int]]) -> list[tuple[int, int, int, float]]:
    """``(shard, slice, size, mean)`` of each slice more than :data:`IMBALANCE_FACTOR` times
    above or below the mean slice size (``sizes[shard][slice]``), when the mean is large enough
    to tell."""
    flat = [size for shard in sizes for size in shard]
    if not flat:
        return []
    mean = sum(flat) / len(flat)
    if mean < IMBALANCE_MIN_MEAN:
        return []
    return [
        (shard, slice_, size, mean)
        for shard, row in enumerate(sizes)
        for slice_, size in enumerate(row)
        if size > IMBALANCE_FACTOR * mean or size < mean / IMBALANCE_FACTOR
    ]
