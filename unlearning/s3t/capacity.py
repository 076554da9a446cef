"""How many deletions a model absorbs before every shard is dead (no valid sequence left).

A sequence dies when its first slice is hit; a shard dies once all its distinct first slices are
hit. With deletions falling uniformly on the ``m·L`` (shard, slice) cells this is a coupon
collector over ``m·B'`` cells, ``B' = #distinct first slices = min(B, L)`` for both strategies:
``E = m·L·H(m·B')``. SISA is ``B' = 1``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from fractions import Fraction


def harmonic(n: int) -> float:
    return float(sum(Fraction(1, k) for k in range(1, n + 1)))


def expected_deletions_until_dead(n_shards: int, n_slices: int, budget: int) -> float:
    """``m·L·H(m·min(B, L))``."""
    return n_shards * n_slices * harmonic(n_shards * min(budget, n_slices))


def simulate_deletions_until_dead(
    n_shards: int, n_slices: int, orders: Sequence[Sequence[int]], trials: int, seed: int = 0
) -> float:
    """Mean number of uniform random (shard, slice) deletions until every shard is dead."""
    rng = random.Random(seed)
    first_slices = {order[0] for order in orders}
    total = 0
    for _ in range(trials):
        alive = {shard: set(first_slices) for shard in range(n_shards)}
        deletions = 0
        while alive:
            deletions += 1
            shard, slice_ = rng.randrange(n_shards), rng.randrange(n_slices)
            if shard in alive:
                alive[shard].discard(slice_)
                if not alive[shard]:
                    del alive[shard]
        total += deletions
    return total / trials
