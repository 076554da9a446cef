"""Deterministic assignment of samples to shards and slices.

The assignment must be the same in every process and every release, so it uses SHA-256 of the
model id and the sample's external id, never Python's salted ``hash``.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple


class Placement(NamedTuple):
    shard: int
    slice: int


def assign(model_key: str, external_id: str, n_shards: int, n_slices: int) -> Placement:
    """Shard and slice of a sample: independent, uniform and stable for a given key."""
    if n_shards < 1 or n_slices < 1:
        raise ValueError("`n_shards` and `n_slices` must be at least 1")
    digest = hashlib.sha256(f"{model_key}\x1f{external_id}".encode()).digest()
    shard = int.from_bytes(digest[:8], "big") % n_shards
    slice_ = int.from_bytes(digest[8:16], "big") % n_slices
    return Placement(shard, slice_)
