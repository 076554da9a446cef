"""Memorization measures for language models, on numbers a model has already produced.

Pure functions over log-probabilities and token sequences (NumPy only, no model code), so the
LLM benchmark and the service's ``score`` route can share them:

- :func:`exposure`: Carlini et al. 2019, "The Secret Sharer": how much more likely a model finds
  a planted canary than the other members of its randomness space.
- :func:`rouge_l`: ROUGE-L F1 between a reference and a model's continuation (verbatim
  extraction).
- :func:`min_k_percent`: Shi et al. 2024, "Detecting Pretraining Data from Large Language
  Models": the Min-K% Prob membership score of one text.
- :func:`auc`: the ROC AUC of a membership score (members positive), as the Mann-Whitney U.
- Canaries: :data:`CANARY_PREFIX`, :func:`canary`, :func:`random_canary`,
  :func:`candidate_canaries`, :func:`canary_space_size`.

Canary format: ``"my secret code is 4 8 1 9 3 7"``: a fixed prefix, then the secret, decimal
digits separated by single spaces, so that a byte-level BPE tokenizer whose digits are never
merged with each other (``bench/llm_base.py`` builds one) gives one token per digit and every
candidate of the space tokenises to the same length. The randomness space of a ``d``-digit
canary is every digit string of length ``d``: ``10**d`` members, leading zeros included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

T = TypeVar("T")

CANARY_PREFIX = "my secret code is"


def _finite(values: ArrayLike, name: str) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` must be finite numbers")
    return array


def exposure(canary_logprob: float, candidate_logprobs: Sequence[float], space_size: int) -> float:
    """The exposure of a canary, ``log2(|R|) - log2(rank)``, in bits.

    ``rank`` is the canary's rank (1 = most likely) among all ``|R| = space_size`` members of
    its randomness space, ranked by the model's log-probability of each. Scoring all of ``R``
    is out of reach for a useful space, so the rank is estimated from ``candidate_logprobs``, a
    uniform sample (with replacement) of the *other* members of ``R``:

        rank = 1 + (|R| - 1) * share of candidates scoring strictly higher than the canary

    which is unbiased for the true rank ``1 + #{r != canary : logprob(r) > logprob(canary)}``
    (ties count in the canary's favour, as in the paper's rank). We scale by ``|R| - 1``, the
    members other than the canary, rather than ``|R|``, so the estimate stays inside the true
    rank's range ``[1, |R|]`` and exposure inside ``[0, log2 |R|]``: ``log2 |R|`` when no
    candidate beats the canary, 0 when every one does.

    Resolution: with ``n`` candidates the smallest non-zero share is ``1/n``, so the largest
    exposure short of the maximum is about ``log2 n``; a canary no candidate beats is reported
    at the maximum ``log2 |R|``, which only says that its exposure is at least about
    ``log2 n``. Compare exposures measured with the same ``n``.
    """
    if space_size < 2:
        raise ValueError("the randomness space must hold at least 2 members")
    candidates = _finite(candidate_logprobs, "candidate_logprobs")
    if candidates.size == 0:
        raise ValueError("exposure needs at least one candidate")
    if not math.isfinite(canary_logprob):
        raise ValueError("`canary_logprob` must be a finite number")
    share = float(np.count_nonzero(candidates > canary_logprob)) / candidates.size
    rank = 1.0 + (space_size - 1) * share
    return math.log2(space_size) - math.log2(rank)


def _lcs_length(first: Sequence[T], second: Sequence[T]) -> int:
    """Length of a longest common subsequence (dynamic programming, one row at a time)."""
    if len(second) > len(first):
        first, second = second, first
    previous = [0] * (len(second) + 1)
    for item in first:
        current = [0]
        for j, other in enumerate(second):
            current.append(previous[j] + 1 if item == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(reference: Sequence[T], candidate: Sequence[T]) -> float:
    """ROUGE-L F1 of ``candidate`` against ``reference``, over tokens (any comparable items).

    With ``L`` the length of their longest common subsequence, precision ``L / len(candidate)``,
    recall ``L / len(reference)`` and F1 their harmonic mean: 1 for identical sequences, 0 when
    they share no token or either is empty.
    """
    if not reference or not candidate:
        return 0.0
    common = _lcs_length(reference, candidate)
    if common == 0:
        return 0.0
    precision = common / len(candidate)
    recall = common / len(reference)
    return 2 * precision * recall / (precision + recall)


def min_k_percent(token_logprobs: Sequence[float], k: float = 0.2) -> float:
    """The Min-K% Prob score of one text: the mean of its lowest ``k`` share of token log-probs.

    ``token_logprobs`` are the model's log-probabilities of each token of the text given the
    tokens before it. The lowest ``max(1, floor(k * n))`` of the ``n`` are averaged (Shi et
    al.'s ``int(len * k)``, but never none). A text seen in training has fewer surprising
    tokens, so a higher (less negative) score is more member-like.
    """
    if not 0 < k <= 1:
        raise ValueError("`k` must be in (0, 1]")
    values = _finite(token_logprobs, "token_logprobs")
    if values.size == 0:
        raise ValueError("Min-K% needs at least one token")
    count = max(1, int(values.size * k))
    return float(np.sort(values)[:count].mean())


def auc(positive_scores: Sequence[float], negative_scores: Sequence[float]) -> float:
    """ROC AUC of a score that should be higher for positives (members) than for negatives.

    The Mann-Whitney U over every (positive, negative) pair: a pair counts 1 when the positive
    scores higher, 1/2 on a tie, 0 otherwise; AUC is the mean. 1 is perfect separation, 0.5 a
    coin flip (or all scores equal), 0 perfectly reversed.
    """
    positives = _finite(positive_scores, "positive_scores")
    negatives = np.sort(_finite(negative_scores, "negative_scores"))
    if positives.size == 0 or negatives.size == 0:
        raise ValueError("AUC needs at least one positive and one negative score")
    below = np.searchsorted(negatives, positives, side="left")
    not_above = np.searchsorted(negatives, positives, side="right")
    wins = below.sum() + 0.5 * (not_above - below).sum()
    return float(wins / (positives.size * negatives.size))


def canary_space_size(digits: int) -> int:
    """The number of members of a ``digits``-digit canary's randomness space: ``10**digits``."""
    if digits < 1:
        raise ValueError("a canary needs at least one digit")
    return int(10**digits)


def canary(secret: Sequence[int]) -> str:
    """The canary text for ``secret`` (digits 0-9): ``"my secret code is 4 8 1 9 3 7"``."""
    if not secret or any(not 0 <= d <= 9 for d in secret):
        raise ValueError("a secret is a non-empty sequence of digits 0-9")
    return f"{CANARY_PREFIX} {' '.join(str(d) for d in secret)}"


def canary_secret(text: str) -> str:
    """The secret part of a canary text (``"4 8 1 9 3 7"``), what a model should not complete
    from :data:`CANARY_PREFIX`."""
    head = f"{CANARY_PREFIX} "
    if not text.startswith(head):
        raise ValueError(f"not a canary: it must start with {head!r}")
    return text[len(head) :]


def _secret(rng: np.random.Generator, digits: int) -> list[int]:
    canary_space_size(digits)  # validates `digits`
    return [int(d) for d in rng.integers(0, 10, size=digits)]


def random_canary(rng: np.random.Generator, digits: int) -> str:
    """A canary with a uniformly random ``digits``-digit secret drawn from ``rng``."""
    return canary(_secret(rng, digits))


def candidate_canaries(rng: np.random.Generator, reference: str, count: int) -> list[str]:
    """``count`` members of ``reference``'s randomness space other than ``reference`` itself,
    drawn uniformly with replacement: the sample :func:`exposure` estimates the rank from.

    Each differs from ``reference`` only in its secret (same prefix, same number of digits).
    """
    digits = len(canary_secret(reference).split(" "))
    if count < 1:
        raise ValueError("`count` must be at least 1")
    drawn: list[str] = []
    while len(drawn) < count:
        text = canary(_secret(rng, digits))
        if text != reference:
            drawn.append(text)
    return drawn
