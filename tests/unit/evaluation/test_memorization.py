"""The memorization measures on hand-made numbers: exposure, ROUGE-L, Min-K% Prob, AUC, canaries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unlearning.evaluation.memorization import (
    CANARY_PREFIX,
    auc,
    canary,
    canary_secret,
    canary_space_size,
    candidate_canaries,
    exposure,
    min_k_percent,
    random_canary,
    rouge_l,
)

# exposure


def test_a_canary_no_candidate_beats_has_the_maximum_exposure() -> None:
    assert exposure(-1.0, [-5.0, -3.0, -2.0], 10**6) == pytest.approx(math.log2(10**6))


def test_a_canary_every_candidate_beats_has_zero_exposure() -> None:
    assert exposure(-9.0, [-5.0, -3.0, -2.0], 10**6) == pytest.approx(0.0)


def test_exposure_follows_the_estimated_rank() -> None:
    # half the candidates are more likely: rank = 1 + (|R| - 1) / 2
    space = 1001
    expected = math.log2(space) - math.log2(1 + (space - 1) / 2)
    assert exposure(-2.0, [-1.0, -1.5, -3.0, -4.0], space) == pytest.approx(expected)


def test_ties_count_in_the_canarys_favour() -> None:
    assert exposure(-2.0, [-2.0, -2.0], 100) == pytest.approx(math.log2(100))


def test_a_more_likely_canary_is_more_exposed() -> None:
    candidates = list(np.linspace(-20, -1, 50))
    assert exposure(-3.0, candidates, 10**6) > exposure(-10.0, candidates, 10**6)


@pytest.mark.parametrize(
    ("canary_logprob", "candidates", "space"),
    [(-1.0, [], 100), (-1.0, [-2.0], 1), (math.nan, [-2.0], 100), (-1.0, [math.inf], 100)],
)
def test_exposure_refuses_what_it_cannot_estimate(
    canary_logprob: float, candidates: list[float], space: int
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        exposure(canary_logprob, candidates, space)


# ROUGE-L


def test_identical_sequences_score_one() -> None:
    assert rouge_l([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0


def test_disjoint_or_empty_sequences_score_zero() -> None:
    assert rouge_l([1, 2], [3, 4]) == 0.0
    assert rouge_l([], [1]) == 0.0
    assert rouge_l([1], []) == 0.0


def test_rouge_l_is_the_f1_of_the_longest_common_subsequence() -> None:
    # LCS of "a b c d e" and "a x c e" is "a c e": P = 3/4, R = 3/5
    reference, candidate = ["a", "b", "c", "d", "e"], ["a", "x", "c", "e"]
    precision, recall = 3 / 4, 3 / 5
    expected = 2 * precision * recall / (precision + recall)
    assert rouge_l(reference, candidate) == pytest.approx(expected)
    assert rouge_l(candidate, reference) == pytest.approx(expected)


def test_rouge_l_counts_order_not_just_overlap() -> None:
    # same tokens reversed: the LCS is one token long
    assert rouge_l([1, 2, 3], [3, 2, 1]) == pytest.approx(1 / 3)


# Min-K% Prob


def test_min_k_averages_the_lowest_share() -> None:
    logprobs = [-0.1, -5.0, -0.2, -3.0, -0.3, -0.4, -0.5, -0.6, -0.7, -0.8]
    assert min_k_percent(logprobs, k=0.2) == pytest.approx(-4.0)
    assert min_k_percent(logprobs, k=1.0) == pytest.approx(np.mean(logprobs))


def test_min_k_keeps_at_least_one_token() -> None:
    assert min_k_percent([-1.0, -2.0, -0.5], k=0.2) == pytest.approx(-2.0)


@pytest.mark.parametrize(("values", "k"), [([], 0.2), ([-1.0], 0.0), ([-1.0], 1.5)])
def test_min_k_refuses_bad_input(values: list[float], k: float) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        min_k_percent(values, k=k)


# AUC


def test_perfectly_separated_scores_have_auc_one() -> None:
    assert auc([3.0, 4.0, 5.0], [0.0, 1.0, 2.0]) == 1.0


def test_reversed_scores_have_auc_zero() -> None:
    assert auc([0.0, 1.0], [2.0, 3.0, 4.0]) == 0.0


def test_equal_scores_have_auc_one_half() -> None:
    assert auc([1.0, 1.0], [1.0, 1.0, 1.0]) == 0.5


def test_auc_counts_ties_one_half() -> None:
    # pairs: (2,1) win, (2,2) tie, (2,3) loss, (4,*) three wins -> (1 + 0.5 + 3) / 6
    assert auc([2.0, 4.0], [1.0, 2.0, 3.0]) == pytest.approx(4.5 / 6)


def test_auc_matches_the_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    positives = rng.integers(0, 6, size=40).astype(float)
    negatives = rng.integers(0, 6, size=30).astype(float)
    pairs = positives[:, None] - negatives[None, :]
    expected = ((pairs > 0) + 0.5 * (pairs == 0)).mean()
    assert auc(list(positives), list(negatives)) == pytest.approx(expected)


def test_auc_refuses_an_empty_side() -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        auc([], [1.0])


# canaries


def test_the_canary_format() -> None:
    assert canary([4, 8, 1, 9, 3, 7]) == "my secret code is 4 8 1 9 3 7"
    assert canary_secret("my secret code is 4 8 1 9 3 7") == "4 8 1 9 3 7"
    assert canary_space_size(6) == 10**6


def test_random_canaries_are_seeded_and_well_formed() -> None:
    first = random_canary(np.random.default_rng(7), 6)
    assert first == random_canary(np.random.default_rng(7), 6)
    assert first.startswith(CANARY_PREFIX + " ")
    secret = canary_secret(first).split(" ")
    assert len(secret) == 6
    assert all(len(d) == 1 and d.isdigit() for d in secret)
    rng = np.random.default_rng(1)
    assert len({random_canary(rng, 6) for _ in range(50)}) > 45


def test_candidates_differ_from_the_canary_only_in_the_secret() -> None:
    reference = canary([0, 0])
    candidates = candidate_canaries(np.random.default_rng(3), reference, 300)
    assert len(candidates) == 300
    assert reference not in candidates
    assert all(c.startswith(CANARY_PREFIX + " ") and len(c) == len(reference) for c in candidates)
    # uniform over the 99 other members: nearly all of them turn up in 300 draws
    assert len(set(candidates)) > 90


def test_canaries_refuse_bad_secrets() -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        canary([])
    with pytest.raises(ValueError):  # noqa: PT011
        canary([10])
    with pytest.raises(ValueError):  # noqa: PT011
        canary_space_size(0)
    with pytest.raises(ValueError):  # noqa: PT011
        canary_secret("hello 1 2")
