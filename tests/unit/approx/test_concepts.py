"""Concept-inference and data-poisoning class unlearning on the tiny trained prefix."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from tests.unit.approx.test_methods import _examples, _model, _rows, trained
from unlearning.approx import Examples, PrefixModel, UnlearningInputError
from unlearning.approx.concepts import (
    ConceptHead,
    ConceptPoisonConfig,
    TargetRule,
    concept_bank,
    concept_poisoning,
    fit_cbm,
    integrated_gradients,
    represent,
    specific_concepts,
)
from unlearning.s3t.backbone import Encoded
from unlearning.s3t.weights import StageWeights

pytestmark = pytest.mark.usefixtures("one_torch_thread")

__all__ = ["trained"]  # the module-scoped fixture, shared with test_methods

ROWS = _rows(48)  # what the fixture was trained on
CLASS = 0
FORGET = [row for row in ROWS if row[1] == CLASS]
RETAIN = [row for row in ROWS if row[1] != CLASS]
FAST = ConceptPoisonConfig(epochs=4, lr=1e-2, batch_size=8, ig_steps=20, cbm_steps=200)


def _accuracy(model: PrefixModel, examples: Examples) -> float:
    with torch.no_grad():
        return float((model(examples.encoded).argmax(-1) == examples.targets).float().mean())


def _snapshot(model: PrefixModel) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def _probe(model: PrefixModel) -> tuple[torch.Tensor, torch.Tensor, ConceptHead]:
    data = _examples(ROWS)
    assert data.targets is not None
    reps = represent(model, data)
    scores = concept_bank(reps, 16).scores(reps)
    return scores, data.targets, fit_cbm(scores, data.targets, 3)


def test_integrated_gradients_are_complete(trained: list[StageWeights]) -> None:
    scores, _, head = _probe(_model(trained))
    zero = torch.zeros(1, scores.shape[1])
    for c in range(3):
        ig = integrated_gradients(head, scores, c, steps=50)
        expected = head(scores)[:, c] - head(zero)[:, c]
        assert torch.allclose(ig.sum(-1), expected, atol=1e-4)

    # A nonlinear head: completeness holds up to the Riemann error.
    def curved(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(head(x)) + head(x) ** 2

    ig = integrated_gradients(curved, scores, 1, steps=50)
    expected = curved(scores)[:, 1] - curved(zero)[:, 1]
    assert torch.allclose(ig.sum(-1), expected, atol=1e-2, rtol=1e-2)


def test_the_bank_and_the_probe(trained: list[StageWeights]) -> None:
    model = _model(trained)
    data = _examples(ROWS)
    reps = represent(model, data)
    assert reps.shape == (len(ROWS), 32)
    bank = concept_bank(reps, 16, seed=3)
    assert bank.vectors.shape == (16, 32)
    assert torch.allclose(bank.vectors.norm(dim=-1), torch.ones(16), atol=1e-5)
    assert torch.equal(bank.vectors, concept_bank(reps, 16, seed=3).vectors)
    scores = bank.scores(reps)
    assert scores.shape == (len(ROWS), 16) and bool((scores.abs() <= 1 + 1e-5).all())
    assert concept_bank(reps, 100).vectors.shape[0] == len(ROWS)  # k-means: at most one per row
    assert concept_bank(reps, 100, kind="pca").vectors.shape[0] == 32  # at most the dimension
    assert data.targets is not None
    head = fit_cbm(scores, data.targets, 3)
    assert float((head(scores).argmax(-1) == data.targets).float().mean()) > 0.8
    # The l1 penalty makes it sparser.
    sparse = fit_cbm(scores, data.targets, 3, l1=3e-2)
    assert int((sparse.weight.abs() < 1e-3).sum()) > int((head.weight.abs() < 1e-3).sum())


def test_the_selected_concepts_are_distinct_and_most_specific(
    trained: list[StageWeights],
) -> None:
    scores, labels, head = _probe(_model(trained))
    concepts, specificity = specific_concepts(head, scores, labels, CLASS, top_k=5, steps=20)
    assert len(concepts) == len(set(concepts)) == 5
    assert all(0 <= i < 16 for i in concepts)
    rest = [i for i in range(16) if i not in concepts]
    assert float(specificity[list(concepts)].min()) >= float(specificity[rest].max())
    assert list(specificity[list(concepts)]) == sorted(specificity[list(concepts)], reverse=True)


@pytest.mark.parametrize("labels", ["random", "targeted"])
def test_poisoning_forgets_the_class_and_keeps_the_others(
    trained: list[StageWeights], labels: str
) -> None:
    model, forget, retain = _model(trained), _examples(FORGET), _examples(RETAIN)
    assert _accuracy(model, forget) > 0.8
    r0 = _accuracy(model, retain)
    config = dataclasses.replace(FAST, labels=labels)  # type: ignore[arg-type]
    report = concept_poisoning(model, forget, retain, 3, config)
    assert _accuracy(model, forget) <= 0.1
    assert _accuracy(model, retain) >= min(0.8, r0 - 0.1)
    assert report.n_concepts == 32 and report.poisoned == len(FORGET)
    (only,) = report.classes
    assert only.label == CLASS and len(set(only.concepts)) == 5
    if labels == "targeted":
        assert only.target is not None and only.target != CLASS
        with torch.no_grad():
            predicted = model(forget.encoded).argmax(-1)
        assert float((predicted == only.target).float().mean()) >= 0.9
    else:
        assert only.target is None


def test_targeted_relabels_every_forget_row_to_one_other_class(
    trained: list[StageWeights], monkeypatch: pytest.MonkeyPatch
) -> None:
    from unlearning.approx import concepts

    seen: list[Examples] = []
    monkeypatch.setattr(concepts, "_train", lambda _m, data, _c, _s: seen.append(data))
    forget, retain = _examples(FORGET), _examples(RETAIN)
    rules: tuple[TargetRule, ...] = ("attribution", "centroid")
    for rule in rules:
        config = dataclasses.replace(FAST, labels="targeted", target=rule)
        report = concept_poisoning(_model(trained), forget, retain, 3, config)
        data = seen.pop()
        assert data.targets is not None and retain.targets is not None
        relabelled = data.targets[: len(FORGET)]
        assert set(relabelled.tolist()) == {report.classes[0].target} != {CLASS}
        assert torch.equal(data.targets[len(FORGET) :], retain.targets)  # clean retain
    # Random: never the forgotten class; the retain share option poisons high-concept rows.
    config = dataclasses.replace(FAST, poison_share=0.25)
    report = concept_poisoning(_model(trained), forget, retain, 3, config)
    data = seen.pop()
    assert data.targets is not None and retain.targets is not None
    assert CLASS not in data.targets[: len(FORGET)].tolist()
    changed = int((data.targets[len(FORGET) :] != retain.targets).sum())
    assert changed == round(0.25 * len(RETAIN)) == report.poisoned - len(FORGET)


def test_it_is_deterministic_given_the_seed(trained: list[StageWeights]) -> None:
    forget, retain = _examples(FORGET), _examples(RETAIN)
    config = dataclasses.replace(FAST, epochs=1)
    first, second, other = _model(trained), _model(trained), _model(trained)
    a = concept_poisoning(first, forget, retain, 3, config)
    b = concept_poisoning(second, forget, retain, 3, config)
    assert a == b
    s1, s2 = _snapshot(first), _snapshot(second)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    concept_poisoning(other, forget, retain, 3, dataclasses.replace(config, seed=1))
    s3 = _snapshot(other)
    assert any(not torch.equal(s1[k], s3[k]) for k in s1)


def test_several_forgotten_classes_are_handled_each(trained: list[StageWeights]) -> None:
    two = [row for row in ROWS if row[1] != 2]
    rest = [row for row in ROWS if row[1] == 2]
    config = dataclasses.replace(FAST, labels="targeted", epochs=1)
    report = concept_poisoning(_model(trained), _examples(two), _examples(rest), 3, config)
    assert [c.label for c in report.classes] == [0, 1]
    assert all(c.target == 2 for c in report.classes)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"labels": "uniform"}, "labels"),
        ({"bank": "words"}, "bank"),
        ({"target": "farthest"}, "target"),
        ({"n_concepts": 0}, "n_concepts"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 40}, "top_k"),
        ({"ig_steps": 0}, "ig_steps"),
        ({"cbm_steps": 0}, "cbm_steps"),
        ({"cbm_lr": 0.0}, "cbm_lr"),
        ({"l1": -1.0}, "l1"),
        ({"l2": float("nan")}, "l2"),
        ({"poison_share": 1.5}, "poison_share"),
        ({"epochs": 0}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_configs_refuse_bad_values(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ConceptPoisonConfig(**kwargs)


def test_defaults() -> None:
    config = ConceptPoisonConfig()
    assert (config.labels, config.n_concepts, config.top_k, config.ig_steps) == (
        "random",
        32,
        5,
        50,
    )
    assert config.poison_share == 0 and config.bank == "kmeans"


def test_unusable_inputs_are_refused(trained: list[StageWeights]) -> None:
    model = _model(trained)
    forget, retain = _examples(FORGET), _examples(RETAIN)
    empty = Examples(
        Encoded(torch.zeros((0, 16), dtype=torch.long), torch.zeros((0, 16), dtype=torch.long)),
        torch.zeros(0, dtype=torch.long),
    )
    values = Examples(forget.encoded, torch.zeros(len(FORGET)))
    with pytest.raises(UnlearningInputError, match="forget set is empty"):
        concept_poisoning(model, empty, retain, 3)
    with pytest.raises(UnlearningInputError, match="retain set is empty"):
        concept_poisoning(model, forget, empty, 3)
    with pytest.raises(UnlearningInputError, match="classification"):
        concept_poisoning(model, values, retain, 3)
    with pytest.raises(UnlearningInputError, match="classification"):
        concept_poisoning(model, forget, retain, 1)
    with pytest.raises(UnlearningInputError, match="no labels"):
        concept_poisoning(model, Examples(forget.encoded, None), retain, 3)
    with pytest.raises(UnlearningInputError, match="no labels"):
        concept_poisoning(model, forget, Examples(retain.encoded, None), 3)
    with pytest.raises(UnlearningInputError, match="lie in"):
        concept_poisoning(model, forget, retain, 2)
    everything = _examples(ROWS)
    with pytest.raises(UnlearningInputError, match="no class"):
        concept_poisoning(model, everything, retain, 3)
