"""The unlearning metrics on outputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from unlearning.evaluation import (
    UnlearningScores,
    accuracy,
    avg_gap,
    evaluate_classifier,
    evaluate_regressor,
    mia_efficacy,
    true_label_confidence,
)

RNG = np.random.default_rng(0)


def _logits_with_confidence(n: int, confidence: float, labels: np.ndarray) -> np.ndarray:
    """Two-class logits whose softmax gives ``confidence`` (plus noise) to the label."""
    p = np.clip(confidence + RNG.normal(0, 0.03, n), 0.01, 0.99)
    margin = np.log(p / (1 - p))
    logits = np.zeros((n, 2))
    logits[np.arange(n), labels] = margin
    return logits


def test_accuracy_and_confidence() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    labels = np.array([0, 1, 1])
    assert accuracy(logits, labels) == pytest.approx(200 / 3)
    confidence = true_label_confidence(logits, labels)
    assert confidence[0] == pytest.approx(1 / (1 + np.exp(-2)))
    assert confidence[2] == pytest.approx(1 / (1 + np.exp(3)))


def test_mia_calls_test_like_samples_non_members() -> None:
    members = RNG.normal(0.95, 0.02, 400)  # confident on what it trained on
    outsiders = RNG.normal(0.6, 0.05, 200)
    assert mia_efficacy(members, outsiders, RNG.normal(0.6, 0.05, 100)) > 90  # forgotten
    assert mia_efficacy(members, outsiders, RNG.normal(0.95, 0.02, 100)) < 10  # remembered


def test_scores_of_a_classifier_and_the_gap_to_retraining() -> None:
    n = 200
    labels = RNG.integers(0, 2, n)
    retain = (_logits_with_confidence(n, 0.95, labels), labels)
    test = (_logits_with_confidence(n, 0.7, labels), labels)
    remembered = (_logits_with_confidence(n, 0.95, labels), labels)
    forgotten = (_logits_with_confidence(n, 0.7, labels), labels)
    kept = evaluate_classifier(remembered, retain, test)
    gone = evaluate_classifier(forgotten, retain, test)
    assert kept.ua == 0 and gone.ua == 0  # both still right on the forget set ...
    assert kept.mia < 10 < 90 < gone.mia  # ... but only one looks like unseen data
    assert (kept.ra, kept.ta) == (100, 100)
    assert avg_gap(gone, gone) == 0
    assert avg_gap(kept, gone) == pytest.approx(abs(kept.mia - gone.mia) / 4)


def test_regression_uses_errors() -> None:
    targets = RNG.normal(0, 1, 300)
    retain = (targets + RNG.normal(0, 0.05, 300), targets)
    test = (targets[:200] + RNG.normal(0, 0.5, 200), targets[:200])
    forget = (targets[:50] + RNG.normal(0, 0.5, 50), targets[:50])
    scores = evaluate_regressor(forget, retain, test)
    assert scores.ra < 0.1 < scores.ta and scores.ua > 0.2
    assert scores.mia > 50  # the forget set's errors look like the test set's


def test_avg_gap_is_the_mean_absolute_difference() -> None:
    a = UnlearningScores(ua=10, ra=90, ta=80, mia=20)
    b = UnlearningScores(ua=14, ra=88, ta=80, mia=10)
    assert avg_gap(a, b) == pytest.approx((4 + 2 + 0 + 10) / 4)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: accuracy(np.zeros((0, 2)), np.zeros(0, dtype=int)), "non-empty"),
        (lambda: accuracy(np.zeros((2, 2)), np.array([0])), "one label per row"),
        (lambda: accuracy(np.zeros((2, 2)), np.array([0, 2])), "outside 0..1"),
        (lambda: accuracy(np.zeros((2, 2)), np.array([0.0, 1.0])), "class indices"),
        (lambda: mia_efficacy([0.9], [], [0.5]), "non-empty `test`"),
        (lambda: mia_efficacy([0.9], [0.5], [np.nan]), "non-finite"),
        (lambda: evaluate_regressor(([1.0], [1.0, 2.0]), ([1.0], [1.0]), ([1.0], [1.0])), "forget"),
    ],
)
def test_unusable_inputs_are_refused(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]
