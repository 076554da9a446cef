"""`auto` learning from grades: a method that lands too far from exact on a model stops being
chosen for it; a good one keeps being chosen; too few grades leave the rule in charge."""

from __future__ import annotations

import pytest

from unlearning.approx.graded_choice import GradedChoiceConfig, MethodRecord, choose_by_grades
from unlearning.approx.prefix_pass import RequestShape, auto_candidates
from unlearning.families import Modality
from unlearning.s3t.config import Task

RULE = auto_candidates(RequestShape.samples, Task.CLASSIFICATION, 0.05, Modality.TEXT)


def test_the_rule_decides_until_there_are_enough_grades() -> None:
    assert [name for name, _ in RULE] == ["ssd", "iau"]
    method, why = choose_by_grades(RULE, {})
    assert method == "ssd" and "too few grades" in why
    two_bad = {"ssd": MethodRecord("ssd", 2, 40.0, 0.03)}  # bad, but only two grades
    assert choose_by_grades(RULE, two_bad)[0] == "ssd"


def test_a_method_that_lands_far_from_exact_stops_being_chosen() -> None:
    bad = {"ssd": MethodRecord("ssd", 3, 12.0, 0.03)}
    method, why = choose_by_grades(RULE, bad)
    assert method == "iau"
    assert "ssd no longer chosen" in why and "12.0 points" in why
    good = {"ssd": MethodRecord("ssd", 3, 1.5, 0.03)}
    method, why = choose_by_grades(RULE, good)
    assert method == "ssd" and why.startswith("graded: on this model, ssd's 3 graded pass(es)")
    assert "3.0% of the cost" in why


def test_the_closest_graded_method_wins_then_the_cheaper() -> None:
    records = {
        "ssd": MethodRecord("ssd", 5, 3.0, 0.02),
        "iau": MethodRecord("iau", 4, 1.0, 0.02),
    }
    assert choose_by_grades(RULE, records)[0] == "iau"
    tied = {
        "ssd": MethodRecord("ssd", 5, 1.0, 0.04),
        "iau": MethodRecord("iau", 4, 1.0, 0.02),
    }
    assert choose_by_grades(RULE, tied)[0] == "iau"


def test_when_every_candidate_is_too_far_the_closest_still_runs() -> None:
    records = {
        "ssd": MethodRecord("ssd", 3, 20.0, 0.02),
        "iau": MethodRecord("iau", 3, 9.0, 0.02),
    }
    method, why = choose_by_grades(RULE, records)
    assert method == "iau" and "every candidate lands too far" in why


def test_the_config_and_records_are_validated() -> None:
    with pytest.raises(ValueError, match="`min_grades`"):
        GradedChoiceConfig(min_grades=0)
    with pytest.raises(ValueError, match="`max_gap`"):
        GradedChoiceConfig(max_gap=0)
    with pytest.raises(ValueError, match="`mean_gap`"):
        MethodRecord("ssd", 1, 101.0, 0.1)
    with pytest.raises(ValueError, match="candidate"):
        choose_by_grades([], {})
    assert (
        choose_by_grades(
            RULE, {"ssd": MethodRecord("ssd", 1, 12.0, 0.1)}, GradedChoiceConfig(min_grades=1)
        )[0]
        == "iau"
    )
