"""Grading an approximate pass against the exact retrain that supersedes it.

The service computes, for every approximate pass, the exact retrain of the same sequences
later: the oracle that unlearning papers grade against. A grade compares the two models'
outputs on rows neither trained on (an evaluation split) and on the deleted rows:

- **gap**: how far the pass's accuracy on the evaluation rows lands from the exact model's, in
  points (what "within X points of exact" means);
- **agreement**: the share of evaluation rows on which the pass predicts what the exact model
  predicts (two models trained on different data disagree on some rows: this is stricter);
- **kl**: the mean KL divergence KL(exact ‖ pass) of their output distributions on those rows;
- **ua_gap**: accuracy on the deleted rows, pass minus exact, in points (positive: the pass
  still knows them better than a model that never saw them);
- **a per-example membership test** in the spirit of RMIA and U-LiRA (Hayes et al. 2024): each
  row's score is the pass's logit-scaled confidence in its label minus the mean of the same score
  under reference models that never trained on it (the exact orders that remain), which calibrates
  each row by its own difficulty. Deleted rows are then compared with evaluation rows, which no
  model saw: ``membership_auc`` near 50 % means the deleted rows look never seen; ``flagged`` is
  the share of deleted rows above the evaluation rows' 95th percentile (5 % when forgotten).

Pure numpy on outputs: the service runs the models and hands their logits here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from unlearning.evaluation.memorization import auc
from unlearning.evaluation.metrics import accuracy, true_label_confidence

Floats = NDArray[np.float64]

#: The false-positive rate of the membership test's threshold: the evaluation rows'
#: ``1 - FPR`` quantile.
FPR = 0.05
#: Confidences are clipped this far from 0 and 1 before the logit scaling.
_EPS = 1e-6


def _logits(values: ArrayLike, name: str) -> Floats:
    array: Floats = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] < 2:
        raise ValueError(f"`{name}` must be logits of shape (rows, classes >= 2)")
    if not np.isfinite(array).all():
        raise ValueError(f"`{name}` has non-finite values")
    return array


def _log_softmax(logits: Floats) -> Floats:
    shifted = logits - logits.max(axis=1, keepdims=True)
    result: Floats = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return result


def agreement(pass_logits: ArrayLike, exact_logits: ArrayLike) -> float:
    """Percentage of rows on which both models predict the same class."""
    approx, exact = _logits(pass_logits, "pass_logits"), _logits(exact_logits, "exact_logits")
    if approx.shape != exact.shape:
        raise ValueError("the pass's and the exact model's logits must have one shape")
    if len(approx) == 0:
        raise ValueError("agreement needs at least one row")
    return float((approx.argmax(axis=1) == exact.argmax(axis=1)).mean() * 100)


def mean_kl(exact_logits: ArrayLike, pass_logits: ArrayLike) -> float:
    """Mean KL(exact ‖ pass) over rows, in nats: how far the pass's output distribution is from
    the one it stands in for."""
    exact, approx = _logits(exact_logits, "exact_logits"), _logits(pass_logits, "pass_logits")
    if approx.shape != exact.shape:
        raise ValueError("the pass's and the exact model's logits must have one shape")
    if len(exact) == 0:
        raise ValueError("the KL divergence needs at least one row")
    log_p, log_q = _log_softmax(exact), _log_softmax(approx)
    return float((np.exp(log_p) * (log_p - log_q)).sum(axis=1).mean())


def calibrated_scores(
    target_logits: ArrayLike, reference_logits: Sequence[ArrayLike], labels: ArrayLike
) -> Floats:
    """Each row's membership score: the target model's logit-scaled confidence in the row's
    label, minus its mean under the reference models (which never trained on the row)."""
    if not reference_logits:
        raise ValueError("the membership test needs at least one reference model")

    def scaled(logits: ArrayLike, name: str) -> Floats:
        confidence = np.clip(true_label_confidence(logits, labels, name=name), _EPS, 1 - _EPS)
        result: Floats = np.log(confidence) - np.log1p(-confidence)
        return result

    target = scaled(target_logits, "target_logits")
    references = np.stack(
        [scaled(r, f"reference_logits[{i}]") for i, r in enumerate(reference_logits)]
    )
    calibrated: Floats = target - references.mean(axis=0)
    return calibrated


def membership_test(forget_scores: ArrayLike, eval_scores: ArrayLike) -> tuple[float, float]:
    """(AUC, flagged): how well the calibrated scores tell deleted rows from evaluation rows
    (percent; 50 when they look alike), and the percentage of deleted rows above the evaluation
    rows' ``1 - FPR`` quantile (``FPR`` as a percentage when they look alike)."""
    forget = np.asarray(forget_scores, dtype=np.float64).reshape(-1)
    held_out = np.asarray(eval_scores, dtype=np.float64).reshape(-1)
    if forget.size == 0 or held_out.size == 0:
        raise ValueError("the membership test needs deleted rows and evaluation rows")
    threshold = float(np.quantile(held_out, 1 - FPR))
    flagged = float((forget > threshold).mean() * 100)
    return auc(forget.tolist(), held_out.tolist()) * 100, flagged


@dataclass(frozen=True)
class Outputs:
    """One model's logits on the evaluation rows and on the deleted rows."""

    eval_logits: ArrayLike
    forget_logits: ArrayLike | None = None


@dataclass(frozen=True)
class PassGrade:
    """How close a pass came to its exact retrain (see the module's docstring)."""

    accuracy: float  # the pass's, percent of evaluation rows
    exact_accuracy: float  # the exact retrain's
    agreement: float  # percent of evaluation rows
    kl: float  # nats, mean over evaluation rows
    n_eval: int
    ua_gap: float | None = None  # points; None without the deleted rows
    membership_auc: float | None = None  # percent; None without deleted rows or references
    flagged: float | None = None  # percent of deleted rows
    n_forget: int = 0

    @property
    def gap(self) -> float:
        """Points between the pass's accuracy on the evaluation rows and the exact model's."""
        return abs(self.accuracy - self.exact_accuracy)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "exact_accuracy": self.exact_accuracy,
            "agreement": self.agreement,
            "gap": self.gap,
            "kl": self.kl,
            "n_eval": self.n_eval,
            "ua_gap": self.ua_gap,
            "membership_auc": self.membership_auc,
            "flagged": self.flagged,
            "n_forget": self.n_forget,
        }


def grade_pass(
    approximate: Outputs,
    exact: Outputs,
    *,
    eval_labels: ArrayLike,
    forget_labels: ArrayLike | None = None,
    references: Sequence[Outputs] = (),
) -> PassGrade:
    """The pass's grade against the exact model. Without the deleted rows (a model that did
    not opt in to keeping them for grading) only the evaluation rows are compared; the
    membership test also needs ``references`` (models that trained on neither set)."""
    graded = PassGrade(
        accuracy=accuracy(approximate.eval_logits, eval_labels, name="eval"),
        exact_accuracy=accuracy(exact.eval_logits, eval_labels, name="eval"),
        agreement=agreement(approximate.eval_logits, exact.eval_logits),
        kl=mean_kl(exact.eval_logits, approximate.eval_logits),
        n_eval=len(np.asarray(eval_labels)),
    )
    if forget_labels is None or approximate.forget_logits is None or exact.forget_logits is None:
        return graded
    n_forget = len(np.asarray(forget_labels))
    ua_gap = accuracy(approximate.forget_logits, forget_labels, name="forget") - accuracy(
        exact.forget_logits, forget_labels, name="forget"
    )
    membership: tuple[float, float] | tuple[None, None] = (None, None)
    if references and all(r.forget_logits is not None for r in references):
        forget_scores = calibrated_scores(
            approximate.forget_logits,
            [r.forget_logits for r in references if r.forget_logits is not None],
            forget_labels,
        )
        eval_scores = calibrated_scores(
            approximate.eval_logits, [r.eval_logits for r in references], eval_labels
        )
        membership = membership_test(forget_scores, eval_scores)
    return dataclasses.replace(
        graded,
        ua_gap=ua_gap,
        membership_auc=membership[0],
        flagged=membership[1],
        n_forget=n_forget,
    )
