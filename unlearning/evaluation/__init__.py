"""Evaluation of unlearning against exact retraining: UA, RA, TA, MIA efficacy and Avg. Gap."""

from unlearning.evaluation.metrics import (
    UnlearningScores,
    accuracy,
    avg_gap,
    evaluate_classifier,
    evaluate_regressor,
    mia_efficacy,
    true_label_confidence,
)

__all__ = [
    "UnlearningScores",
    "accuracy",
    "avg_gap",
    "evaluate_classifier",
    "evaluate_regressor",
    "mia_efficacy",
    "true_label_confidence",
]
