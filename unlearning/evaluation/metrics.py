"""The standard unlearning metrics (SalUn / Unlearn-Sparse conventions), on model outputs.

- UA, unlearning accuracy: 100 minus the accuracy on the forget set.
- RA, retain accuracy, and TA, test accuracy.
- MIA efficacy: an RBF SVC (``C=3, gamma='auto'``) is trained to tell retain samples (members)
  from test samples (non-members) by one feature, the softmax probability of the true label; the
  efficacy is the share of the forget set it calls non-member, in percent.
- Avg. Gap: the mean absolute difference to exact retraining over UA, RA, TA and MIA.

For regression the error (mean absolute error) takes the place of accuracy: UA is the error on
the forget set, RA and TA the errors on the retain and test sets, and the MIA feature is the
negative absolute error of each sample. All inputs are arrays (or tensors, on any device) of
model outputs and targets, so the metrics apply to any model, the service's ensembles included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.svm import SVC
from torch import Tensor

Floats = NDArray[np.float64]


def _array(values: ArrayLike | Tensor, dtype: type | None = None) -> NDArray[Any]:
    """A NumPy array of ``values``; tensors on any device (a GPU's too) are copied to the CPU."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


@dataclass(frozen=True)
class UnlearningScores:
    """UA, RA, TA and MIA efficacy, each in percent (or as errors, for regression)."""

    ua: float
    ra: float
    ta: float
    mia: float

    def as_dict(self) -> dict[str, float]:
        return {"UA": self.ua, "RA": self.ra, "TA": self.ta, "MIA": self.mia}


def _logits_and_labels(
    logits: ArrayLike, labels: ArrayLike, name: str
) -> tuple[Floats, NDArray[np.int64]]:
    scores = _array(logits, dtype=np.float64)
    targets = _array(labels)
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"`{name}` logits must be a non-empty [rows, classes] array")
    if targets.shape != (scores.shape[0],):
        raise ValueError(f"`{name}` needs one label per row of logits")
    if not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"`{name}` labels must be class indices")
    if targets.min() < 0 or targets.max() >= scores.shape[1]:
        raise ValueError(f"`{name}` has a label outside 0..{scores.shape[1] - 1}")
    return scores, targets.astype(np.int64)


def accuracy(logits: ArrayLike, labels: ArrayLike, *, name: str = "set") -> float:
    """Percentage of rows whose highest logit is the label."""
    scores, targets = _logits_and_labels(logits, labels, name)
    return float((scores.argmax(axis=1) == targets).mean() * 100)


def true_label_confidence(logits: ArrayLike, labels: ArrayLike, *, name: str = "set") -> Floats:
    """The softmax probability of each row's label."""
    scores, targets = _logits_and_labels(logits, labels, name)
    shifted = scores - scores.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    confidence: Floats = probabilities[np.arange(len(targets)), targets]
    return confidence


def mia_efficacy(retain: ArrayLike, test: ArrayLike, forget: ArrayLike) -> float:
    """Percentage of the forget set that a member/non-member attack calls non-member.

    The attack (an RBF SVC on a 1-D feature) trains on the first ``len(test)`` retain values
    (members) against the test values (non-members), as in SalUn's ``SVC_MIA``.
    """
    members = _array(retain, dtype=np.float64).reshape(-1)
    outsiders = _array(test, dtype=np.float64).reshape(-1)
    target = _array(forget, dtype=np.float64).reshape(-1)
    for name, values in (("retain", members), ("test", outsiders), ("forget", target)):
        if values.size == 0:
            raise ValueError(f"the MIA needs a non-empty `{name}` set")
        if not np.isfinite(values).all():
            raise ValueError(f"the MIA's `{name}` feature has non-finite values")
    members = members[: len(outsiders)]
    features = np.concatenate([members, outsiders]).reshape(-1, 1)
    labels = np.concatenate([np.ones(len(members)), np.zeros(len(outsiders))])
    attack = SVC(C=3, gamma="auto", kernel="rbf").fit(features, labels)
    predicted_member = attack.predict(target.reshape(-1, 1))
    return float((1 - predicted_member.mean()) * 100)


def evaluate_classifier(
    forget: tuple[ArrayLike, ArrayLike],
    retain: tuple[ArrayLike, ArrayLike],
    test: tuple[ArrayLike, ArrayLike],
) -> UnlearningScores:
    """UA, RA, TA and MIA efficacy from (logits, labels) of the forget, retain and test sets."""
    return UnlearningScores(
        ua=100 - accuracy(*forget, name="forget"),
        ra=accuracy(*retain, name="retain"),
        ta=accuracy(*test, name="test"),
        mia=mia_efficacy(
            true_label_confidence(*retain, name="retain"),
            true_label_confidence(*test, name="test"),
            true_label_confidence(*forget, name="forget"),
        ),
    )


def _absolute_errors(outputs: ArrayLike, targets: ArrayLike, name: str) -> Floats:
    predicted = _array(outputs, dtype=np.float64).reshape(-1)
    expected = _array(targets, dtype=np.float64).reshape(-1)
    if predicted.size == 0 or predicted.shape != expected.shape:
        raise ValueError(f"`{name}` needs one target per output, and at least one")
    errors: Floats = np.abs(predicted - expected)
    return errors


def evaluate_regressor(
    forget: tuple[ArrayLike, ArrayLike],
    retain: tuple[ArrayLike, ArrayLike],
    test: tuple[ArrayLike, ArrayLike],
) -> UnlearningScores:
    """The regression analogue: mean absolute errors on forget (UA), retain (RA) and test (TA)
    sets, and MIA efficacy with the negative absolute error as the attack's feature."""
    errors = {
        name: _absolute_errors(*pair, name)
        for name, pair in (("forget", forget), ("retain", retain), ("test", test))
    }
    return UnlearningScores(
        ua=float(errors["forget"].mean()),
        ra=float(errors["retain"].mean()),
        ta=float(errors["test"].mean()),
        mia=mia_efficacy(-errors["retain"], -errors["test"], -errors["forget"]),
    )


def avg_gap(scores: UnlearningScores, retrain: UnlearningScores) -> float:
    """Mean absolute difference to exact retraining over UA, RA, TA and MIA (lower is better)."""
    ours, reference = scores.as_dict(), retrain.as_dict()
    return float(np.mean([abs(ours[k] - reference[k]) for k in ours]))
