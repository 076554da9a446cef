"""``auto`` that learns from grades: which candidate method to run on a model, given how its
earlier passes on that model compared with their exact retrains.

Each graded pass has a ``gap`` (points between its accuracy on the evaluation rows and its
exact retrain's, :class:`unlearning.evaluation.grading.PassGrade`) and a cost (its work as a
share of the retrain's). Per model and method, :class:`MethodRecord` sums them.
:func:`choose_by_grades` then, among the candidates the fixed rule would consider
(``prefix_pass.auto_candidates``, in its order of preference):

1. drops a method whose record holds at least ``min_grades`` passes and a mean gap above
   ``max_gap`` (it has shown, on this model, that it lands too far from exact);
2. among the rest with at least ``min_grades`` passes, picks the smallest mean gap (then the
   lower cost, then the rule's order);
3. without one, falls back to the rule: its first candidate still standing.

When every candidate has been dropped, the one with the smallest mean gap runs (a pass is still
better than serving less), and the reason says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class MethodRecord:
    """The graded passes of one method on one model."""

    method: str
    grades: int
    mean_gap: float  # points of accuracy from the exact retrain, evaluation rows
    mean_cost_share: float  # the pass's work over its retrain's (0.05: 5 % of the cost)

    def __post_init__(self) -> None:
        if self.grades < 0:
            raise ValueError("`grades` cannot be negative")
        if not 0.0 <= self.mean_gap <= 100.0:
            raise ValueError("`mean_gap` is in points: 0 to 100")
        if self.mean_cost_share < 0.0:
            raise ValueError("`mean_cost_share` cannot be negative")

    def describe(self) -> str:
        return (
            f"on this model, {self.method}'s {self.grades} graded pass(es) landed within "
            f"{self.mean_gap:.1f} points of exact at {self.mean_cost_share:.1%} of the cost"
        )


@dataclass(frozen=True)
class GradedChoiceConfig:
    """``min_grades``: passes a record needs before it overrides the rule; ``max_gap``: the
    mean gap, in points, above which a method is no longer chosen for the model."""

    min_grades: int = 3
    max_gap: float = 5.0

    def __post_init__(self) -> None:
        if self.min_grades < 1:
            raise ValueError("`min_grades` must be at least 1")
        if not 0.0 < self.max_gap <= 100.0:
            raise ValueError("`max_gap` is in points: above 0, at most 100")


def choose_by_grades(
    candidates: Sequence[tuple[str, str]],
    records: Mapping[str, MethodRecord],
    config: GradedChoiceConfig | None = None,
) -> tuple[str, str]:
    """The method to run and why, from the rule's ``candidates`` ((name, the rule's reason),
    preferred first) and the model's ``records`` by method (see the module's docstring)."""
    if not candidates:
        raise ValueError("`auto` needs at least one candidate method")
    config = config or GradedChoiceConfig()
    graded = {
        name: records[name]
        for name, _ in candidates
        if name in records and records[name].grades >= config.min_grades
    }
    dropped = [name for name, record in graded.items() if record.mean_gap > config.max_gap]
    standing = [(name, why) for name, why in candidates if name not in dropped]
    order = {name: i for i, (name, _) in enumerate(candidates)}

    def best(names: list[str]) -> str:
        return min(names, key=lambda n: (graded[n].mean_gap, graded[n].mean_cost_share, order[n]))

    dropping = "".join(
        f"; {name} no longer chosen: {graded[name].describe()} (more than "
        f"{config.max_gap:g} points)"
        for name in dropped
    )
    proven = [name for name, _ in standing if name in graded]
    if proven:
        chosen = best(proven)
        return chosen, f"graded: {graded[chosen].describe()}{dropping}"
    if standing:
        name, why = standing[0]
        return name, f"{why} (the rule: too few grades on this model yet{dropping})"
    chosen = best(dropped)
    return chosen, (
        f"graded: every candidate lands too far from exact on this model; the closest runs: "
        f"{graded[chosen].describe()}"
    )
