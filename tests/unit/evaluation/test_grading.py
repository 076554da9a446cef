"""Grades of an approximate pass against its exact retrain: agreement, KL, the UA gap and the
per-example membership test."""

from __future__ import annotations

import numpy as np
import pytest

from unlearning.evaluation.grading import (
    FPR,
    Outputs,
    agreement,
    calibrated_scores,
    grade_pass,
    mean_kl,
    membership_test,
)


def _logits_for(confidence: np.ndarray, labels: np.ndarray, n_classes: int = 4) -> np.ndarray:
    """Logits whose softmax gives each row's label the given confidence (the rest shared)."""
    rest = (1 - confidence) / (n_classes - 1)
    probabilities = np.repeat(rest[:, None], n_classes, axis=1)
    probabilities[np.arange(len(labels)), labels] = confidence
    return np.log(probabilities)


def test_agreement_and_kl() -> None:
    rng = np.random.default_rng(0)
    exact = rng.normal(size=(50, 4))
    assert agreement(exact, exact) == 100.0
    assert mean_kl(exact, exact) == pytest.approx(0.0, abs=1e-12)
    flipped = -exact  # the lowest class becomes the highest
    assert agreement(flipped, exact) == 0.0
    p = np.exp(exact) / np.exp(exact).sum(axis=1, keepdims=True)
    q = np.exp(flipped) / np.exp(flipped).sum(axis=1, keepdims=True)
    assert mean_kl(exact, flipped) == pytest.approx(float((p * np.log(p / q)).sum(1).mean()))
    with pytest.raises(ValueError, match="one shape"):
        agreement(exact, exact[:, :3])
    with pytest.raises(ValueError, match="non-finite"):
        mean_kl(exact, np.full((50, 4), np.nan))


def _population(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of varying difficulty: each row's confidence under a model that never saw it."""
    labels = rng.integers(0, 4, size=n)
    difficulty = rng.uniform(0.3, 0.95, size=n)
    return labels, difficulty


def _model(
    rng: np.random.Generator, labels: np.ndarray, base: np.ndarray, lift: float
) -> np.ndarray:
    """A model's logits: the row's own difficulty, some noise, and ``lift`` (logit units) on rows
    it still remembers."""
    logit = np.log(base / (1 - base)) + lift + rng.normal(scale=0.1, size=len(base))
    return _logits_for(1 / (1 + np.exp(-logit)), labels)


def test_the_membership_test_tells_remembered_rows_from_never_seen_ones() -> None:
    """Deleted rows are *harder* than the evaluation rows here: by raw confidence they look
    less like members than evaluation rows do. Calibrated by the references, a pass that still
    remembers them (+1.5 logits) is caught; one that forgot them looks like chance."""
    rng = np.random.default_rng(1)
    eval_labels, eval_base = _population(rng, 400)
    forget_labels, forget_base = _population(rng, 200)
    forget_base = forget_base * 0.4  # hard rows
    references = [
        Outputs(_model(rng, eval_labels, eval_base, 0), _model(rng, forget_labels, forget_base, 0))
        for _ in range(3)
    ]

    def membership(lift: float) -> tuple[float, float]:
        target = Outputs(
            _model(rng, eval_labels, eval_base, 0), _model(rng, forget_labels, forget_base, lift)
        )
        grade = grade_pass(
            target,
            references[0],
            eval_labels=eval_labels,
            forget_labels=forget_labels,
            references=references,
        )
        assert grade.membership_auc is not None and grade.flagged is not None
        return grade.membership_auc, grade.flagged

    remembered_auc, remembered_flagged = membership(1.5)
    assert remembered_auc > 90 and remembered_flagged > 50
    forgotten_auc, forgotten_flagged = membership(0.0)
    assert 40 < forgotten_auc < 60 and forgotten_flagged < 3 * FPR * 100

    # Without the per-row calibration (one flat reference: raw confidence) the remembered rows
    # hide behind their difficulty.
    remembered = _model(rng, forget_labels, forget_base, 1.5)
    raw_forget = calibrated_scores(remembered, [np.zeros_like(remembered)], forget_labels)
    raw_eval = calibrated_scores(
        _model(rng, eval_labels, eval_base, 0), [np.zeros((400, 4))], eval_labels
    )
    assert membership_test(raw_forget, raw_eval)[0] < 50


def test_a_grade_without_the_deleted_rows_compares_the_evaluation_rows_only() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, size=30)
    exact = rng.normal(size=(30, 4))
    grade = grade_pass(Outputs(exact), Outputs(exact), eval_labels=labels)
    assert (grade.agreement, grade.gap, grade.n_eval) == (100.0, 0.0, 30)
    flipped = grade_pass(Outputs(-exact), Outputs(exact), eval_labels=labels)
    assert flipped.agreement == 0.0
    assert flipped.gap == pytest.approx(abs(flipped.accuracy - flipped.exact_accuracy))
    assert grade.ua_gap is None and grade.membership_auc is None and grade.n_forget == 0
    assert grade.to_dict()["gap"] == 0.0


def test_the_ua_gap_is_the_passs_accuracy_on_the_deleted_rows_above_exact() -> None:
    labels = np.array([0, 1, 2, 3])
    knows = _logits_for(np.full(4, 0.9), labels)
    forgot = _logits_for(np.full(4, 0.1), labels)
    eval_logits = np.eye(4)
    grade = grade_pass(
        Outputs(eval_logits, knows),
        Outputs(eval_logits, forgot),
        eval_labels=labels,
        forget_labels=labels,
    )
    assert grade.ua_gap == 100.0 and grade.membership_auc is None  # no references given
