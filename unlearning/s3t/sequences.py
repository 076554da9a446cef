"""Slice sequences: the orders in which a shard's slices feed the stages (paper Alg. 1, 2).

A sequence is a permutation of ``0..L-1``. When a sample of slice ``s`` is deleted, every
sequence keeps only the prefix before ``s``; the more the first slices differ, the more deletions
a shard survives before none of its sequences is left.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from unlearning.s3t.config import S3TConfig, SequenceStrategy

Order = tuple[int, ...]

#: The exponent of the survival score: roughly "after t deletions" (the authors' code uses 100).
SCORE_DELETIONS = 100


def cyclic_sequences(n_slices: int, budget: int) -> list[Order]:
    """Iterative cyclic rotation.

    For ``budget <= L``: the first ``budget`` right-rotations of ``(0..L-1)``, a Latin square, so
    every sequence starts with a different slice. For more, prefixes of growing length are fixed
    and the suffix behind each is rotated, skipping orders already taken.
    """
    _check(n_slices, budget)
    chosen: list[Order] = []
    seen: set[Order] = set()
    base = tuple(range(n_slices))
    for fixed in range(n_slices):
        # Shift 0 last: behind a fixed prefix it is the unrotated suffix.
        shifts = [*range(1, n_slices - fixed), 0] if fixed else range(n_slices)
        for shift in shifts:
            for prefix in _prefixes(base, fixed):
                rest = tuple(s for s in base if s not in prefix)
                order = prefix + _rotate_right(rest, shift)
                if order not in seen:
                    seen.add(order)
                    chosen.append(order)
                if len(chosen) == budget:
                    return chosen
    for order in itertools.permutations(base):
        if order not in seen:
            seen.add(order)
            chosen.append(order)
            if len(chosen) == budget:
                break
    return chosen


def _prefixes(base: Order, length: int) -> list[Order]:
    if length == 0:
        return [()]
    # Prefixes taken from the rotations already used, in order, so they stay diverse.
    rotations = [_rotate_right(base, shift) for shift in range(len(base))]
    return list(dict.fromkeys(rotation[:length] for rotation in rotations))


def _rotate_right(items: Order, shift: int) -> Order:
    if not items:
        return items
    shift %= len(items)
    return items[len(items) - shift :] + items[: len(items) - shift]


def sequence_score(order: Sequence[int], prior: Sequence[float], t: int = SCORE_DELETIONS) -> float:
    """Σ_n n·(1 - Σ_{k≤n} p_{order_k})^t: large when long prefixes are unlikely to be hit."""
    score, mass = 0.0, 0.0
    for n, slice_ in enumerate(order, start=1):
        mass += prior[slice_]
        score += n * max(0.0, 1.0 - mass) ** t
    return score


def bipartite_sequences(
    n_slices: int, budget: int, prior: Sequence[float] | None = None, seed: int = 0
) -> list[Order]:
    """Bipartite-matching selection.

    ``L`` sequences start with distinct slices; each further position is filled for all of them
    at once by a maximum-weight perfect matching of slices to sequences, weighted by the score of
    the extended sequence. For ``budget < L`` the best-scoring ``budget`` are kept; for more,
    further orders are drawn with per-slice weights ``1 - p`` (seeded), as in the authors' code.
    """
    _check(n_slices, budget)
    p = [1.0 / n_slices] * n_slices if prior is None else [float(x) for x in prior]
    if len(p) != n_slices:
        raise ValueError(f"`prior` needs one value per slice ({n_slices})")
    # Start from the slices least likely to be hit, so the best sequences lead with them.
    starts = sorted(range(n_slices), key=lambda s: (p[s], s))
    orders: list[list[int]] = [[s] for s in starts]
    for _ in range(1, n_slices):
        weights = np.full((n_slices, n_slices), -1e18)
        for i, order in enumerate(orders):
            for j in range(n_slices):
                if j not in order:
                    weights[i, j] = sequence_score([*order, j], p)
        rows, cols = linear_sum_assignment(weights, maximize=True)
        for i, j in zip(rows, cols, strict=True):
            orders[i].append(int(j))
    ranked = sorted((tuple(order) for order in orders), key=lambda o: (-sequence_score(o, p), o))
    chosen = ranked[:budget]
    if budget > n_slices:
        chosen.extend(_weighted_permutations(p, budget - n_slices, set(chosen), seed))
    return chosen


def _weighted_permutations(
    prior: Sequence[float], count: int, taken: set[Order], seed: int
) -> list[Order]:
    n = len(prior)
    limit = math.factorial(n) - len(taken)
    if count > limit:
        raise ValueError(f"only {math.factorial(n)} distinct orders of {n} slices exist")
    rng = random.Random(seed)
    found: list[Order] = []
    while len(found) < count:
        remaining = list(range(n))
        order: list[int] = []
        while remaining:
            weights = [max(1.0 - prior[s], 1e-9) for s in remaining]
            pick = rng.choices(remaining, weights=weights)[0]
            remaining.remove(pick)
            order.append(pick)
        candidate = tuple(order)
        if candidate not in taken:
            taken.add(candidate)
            found.append(candidate)
    return found


def _check(n_slices: int, budget: int) -> None:
    if n_slices < 1 or budget < 1:
        raise ValueError("`n_slices` and `budget` must be at least 1")
    if budget > math.factorial(n_slices):
        raise ValueError(f"`budget` {budget} exceeds the {math.factorial(n_slices)} orders")


def plan_sequences(config: S3TConfig) -> list[Order]:
    """The slice orders every shard of a model trains, per its settings."""
    if config.sequence_strategy == SequenceStrategy.BIPARTITE:
        return bipartite_sequences(
            config.n_slices, config.budget, config.deletion_prior, seed=config.seed
        )
    return cyclic_sequences(config.n_slices, config.budget)


def all_orders(n_slices: int) -> list[Order]:
    return list(itertools.permutations(range(n_slices)))


def average_edit_distance(orders: Sequence[Order]) -> float:
    """Mean pairwise positional Hamming distance: the diversity of a set of sequences."""
    pairs = list(itertools.combinations(orders, 2))
    if not pairs:
        return 0.0
    return sum(sum(a != b for a, b in zip(x, y, strict=True)) for x, y in pairs) / len(pairs)
