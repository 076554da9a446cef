"""Seeds derived from what a stage is, so that training it again gives the same bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from the parts' text, stable across processes and releases."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def stage_seed(
    model_seed: int, shard: int, sequence: int, stage: int, sample_ids: Iterable[str]
) -> int:
    """Seed of one stage: the model seed, its place, and the sorted ids it trains on."""
    ids = hashlib.sha256("\x1e".join(sorted(sample_ids)).encode()).hexdigest()
    return derive_seed("stage", model_seed, shard, sequence, stage, ids)
