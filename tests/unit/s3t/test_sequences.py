from __future__ import annotations

import math

import pytest

from unlearning.s3t import S3TConfig
from unlearning.s3t.blocks import adapted_layers, block_layers, stage_layers
from unlearning.s3t.capacity import (
    expected_deletions_until_dead,
    harmonic,
    simulate_deletions_until_dead,
)
from unlearning.s3t.sequences import (
    average_edit_distance,
    bipartite_sequences,
    cyclic_sequences,
    plan_sequences,
    sequence_score,
)


def _latin(orders: list[tuple[int, ...]]) -> bool:
    return all(len({order[p] for order in orders}) == len(orders) for p in range(len(orders[0])))


@pytest.mark.parametrize(("n_slices", "budget"), [(4, 1), (4, 2), (4, 4), (6, 3), (5, 5)])
def test_cyclic_rotations_start_with_distinct_slices(n_slices: int, budget: int) -> None:
    orders = cyclic_sequences(n_slices, budget)
    assert len(orders) == budget
    assert orders[0] == tuple(range(n_slices))
    assert all(sorted(o) == list(range(n_slices)) for o in orders)
    assert _latin(orders)


def test_cyclic_beyond_l_rotates_suffixes_behind_fixed_prefixes() -> None:
    orders = cyclic_sequences(4, 6)
    assert orders == [
        (0, 1, 2, 3),
        (3, 0, 1, 2),
        (2, 3, 0, 1),
        (1, 2, 3, 0),
        (0, 3, 1, 2),
        (3, 2, 0, 1),
    ]
    assert len(cyclic_sequences(3, 6)) == 6  # every permutation
    with pytest.raises(ValueError, match="budget"):
        cyclic_sequences(3, 7)


def test_bipartite_with_uniform_prior_is_a_latin_square() -> None:
    orders = bipartite_sequences(4, 4)
    assert _latin(orders)
    assert average_edit_distance(orders) == 4.0


def test_bipartite_puts_likely_deleted_slices_last() -> None:
    prior = (0.7, 0.1, 0.1, 0.1)
    orders = bipartite_sequences(4, 2, prior)
    assert len(orders) == 2
    assert all(order[0] != 0 for order in orders)
    assert sequence_score(orders[0], prior) >= sequence_score(orders[1], prior)
    # The best order is at least as good as the identity, which starts with the risky slice.
    assert sequence_score(orders[0], prior) > sequence_score((0, 1, 2, 3), prior)


def test_bipartite_beyond_l_adds_distinct_seeded_orders() -> None:
    orders = bipartite_sequences(3, 5, seed=3)
    assert len(set(orders)) == 5
    assert orders == bipartite_sequences(3, 5, seed=3)


def test_plan_follows_the_strategy() -> None:
    assert plan_sequences(S3TConfig(n_slices=3, budget=2)) == cyclic_sequences(3, 2)
    config = S3TConfig(
        n_slices=3,
        budget=3,
        sequence_strategy="bipartite",  # type: ignore[arg-type]
        deletion_prior=(0.2, 0.2, 0.6),
    )
    assert plan_sequences(config) == bipartite_sequences(3, 3, (0.2, 0.2, 0.6))


@pytest.mark.parametrize(
    ("n_layers", "n_slices", "block", "layers"),
    [(6, 4, 1, (5,)), (6, 4, 4, (2,)), (6, 3, 1, (4, 5)), (6, 3, 3, (0, 1)), (12, 5, 2, (8, 9))],
)
def test_blocks_count_from_the_top(
    n_layers: int, n_slices: int, block: int, layers: tuple[int, ...]
) -> None:
    assert block_layers(n_layers, n_slices, block) == layers


def test_leftover_bottom_layers_get_no_adapter() -> None:
    assert adapted_layers(6, 4) == (2, 3, 4, 5)
    assert stage_layers("sisa", 6, 4, 3) == (2, 3, 4, 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot hold"):
        block_layers(3, 4, 1)


@pytest.mark.parametrize(
    ("m", "n_slices", "budget", "expected"),
    [(5, 4, 1, 45.7), (5, 4, 2, 58.6), (5, 4, 4, 72.0), (5, 6, 1, 68.5), (5, 6, 6, 119.8)],
)
def test_expected_deletions_match_coupon_collector(
    m: int, n_slices: int, budget: int, expected: float
) -> None:
    assert expected_deletions_until_dead(m, n_slices, budget) == pytest.approx(expected, abs=0.05)
    assert expected_deletions_until_dead(m, n_slices, budget + 10) >= expected - 0.05


@pytest.mark.parametrize("strategy", ["cyclic", "bipartite"])
def test_simulated_deletions_until_dead_match_formula(strategy: str) -> None:
    config = S3TConfig(n_shards=4, n_slices=4, budget=3, sequence_strategy=strategy)  # type: ignore[arg-type]
    simulated = simulate_deletions_until_dead(4, 4, plan_sequences(config), trials=3000, seed=1)
    assert simulated == pytest.approx(expected_deletions_until_dead(4, 4, 3), rel=0.05)


def test_harmonic() -> None:
    assert harmonic(1) == 1.0
    assert math.isclose(harmonic(4), 25 / 12)
