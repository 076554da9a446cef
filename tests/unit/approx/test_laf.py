"""LAF on the tiny trained prefix: label-free, forget representations move more than retain."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from tests.unit.approx.test_methods import FORGET, RETAIN, _examples, _model, trained
from unlearning.approx import Examples, PrefixModel, UnlearningInputError
from unlearning.approx.data import task_loss
from unlearning.approx.laf import LAFConfig, alignment_loss, laf, nmse, representation
from unlearning.s3t.backbone import Encoded
from unlearning.s3t.weights import StageWeights

pytestmark = pytest.mark.usefixtures("one_torch_thread")

__all__ = ["trained"]  # the module-scoped fixture, shared with test_methods

# Large enough steps for the tiny prefix to move in a few batch pairs (one per epoch).
FAST = LAFConfig(epochs=20, lr_ue=2.5e-3, lr_ra=5e-3, batch_size=8, temperature=5.0)
CHEAP = dataclasses.replace(FAST, epochs=3, vae_epochs=2)


class _Guarded(Examples):
    """Examples whose targets must never be read."""

    def __post_init__(self) -> None:
        pass

    def __getattribute__(self, name: str) -> Any:
        if name == "targets":
            raise AssertionError("LAF read the targets")
        return super().__getattribute__(name)


def _guarded(rows: list[tuple[str, int]]) -> Examples:
    return _Guarded(_examples(rows).encoded, None)


def _drift(before: torch.Tensor, after: torch.Tensor) -> float:
    """Mean cosine distance between each row's representation before and after."""
    return float((1 - torch.nn.functional.cosine_similarity(before, after, dim=1)).mean())


def _reps(model: PrefixModel, examples: Examples) -> torch.Tensor:
    with torch.no_grad():
        return representation(model, examples.encoded)


def test_the_representation_is_what_the_head_reads(trained: list[StageWeights]) -> None:
    model = _model(trained)
    encoded = _examples(FORGET).encoded
    with torch.no_grad():
        assert torch.allclose(model.head(representation(model, encoded)), model(encoded))


def test_laf_is_label_free_and_moves_forget_more_than_retain(
    trained: list[StageWeights],
) -> None:
    model = _model(trained)
    forget, retain = _guarded(FORGET), _guarded(RETAIN)
    with pytest.raises(AssertionError, match="read the targets"):
        _ = forget.targets
    f0, r0 = _reps(model, forget), _reps(model, retain)
    result = laf(model, forget, retain, FAST)
    assert result.steps == FAST.epochs  # one batch pair per epoch: |forget| = batch size
    f1, r1 = _reps(model, forget), _reps(model, retain)
    assert _drift(f0, f1) > 1.5 * _drift(r0, r1) > 0
    # Plain Examples without targets work the same, and the run is reproducible.
    again = _model(trained)
    unlabelled_f = dataclasses.replace(_examples(FORGET), targets=None)
    unlabelled_r = dataclasses.replace(_examples(RETAIN), targets=None)
    assert laf(again, unlabelled_f, unlabelled_r, FAST) == result
    assert torch.equal(_reps(again, forget), f1)


def test_only_editable_stages_change_and_the_head_stays(trained: list[StageWeights]) -> None:
    model = _model(trained, editable=(1,))
    laf(model, _guarded(FORGET), _guarded(RETAIN), CHEAP)
    first, second = model.export()
    for key in first.adapters:
        assert torch.equal(first.adapters[key].a, trained[0].adapters[key].a)
        assert torch.equal(first.adapters[key].b, trained[0].adapters[key].b)
    assert torch.equal(first.head_weight, trained[0].head_weight)
    assert any(
        not torch.equal(second.adapters[k].a, trained[1].adapters[k].a) for k in second.adapters
    )
    # Without repair, only the extractor changes.
    assert torch.equal(second.head_weight, trained[1].head_weight)
    assert torch.equal(second.head_bias, trained[1].head_bias)


def test_repair_trains_the_head_on_retain_labels(trained: list[StageWeights]) -> None:
    forget, retain = _examples(FORGET), _examples(RETAIN)
    plain, repaired = _model(trained), _model(trained)
    laf(plain, forget, retain, CHEAP)
    config = dataclasses.replace(CHEAP, repair=True, repair_epochs=20, repair_lr=1e-2)
    laf(repaired, forget, retain, config)
    # Same extractor edit; the head alone differs and fits the retain set better.
    encoded = retain.encoded
    assert torch.equal(_reps(plain, retain), _reps(repaired, retain))
    assert retain.targets is not None
    with torch.no_grad():
        loss_plain = float(task_loss(plain(encoded), retain.targets))
        loss_repaired = float(task_loss(repaired(encoded), retain.targets))
    assert loss_repaired < loss_plain
    with pytest.raises(UnlearningInputError, match="no labels"):
        laf(_model(trained), forget, dataclasses.replace(retain, targets=None), config)


def test_unusable_inputs_are_refused(trained: list[StageWeights]) -> None:
    empty = Examples(
        Encoded(torch.zeros((0, 16), dtype=torch.long), torch.zeros((0, 16), dtype=torch.long)),
        None,
    )
    with pytest.raises(UnlearningInputError, match="forget set is empty"):
        laf(_model(trained), empty, _guarded(RETAIN), FAST)
    with pytest.raises(UnlearningInputError, match="retain set is empty"):
        laf(_model(trained), _guarded(FORGET), empty, FAST)
    with pytest.raises(UnlearningInputError, match="no editable adapter"):
        laf(_model(trained, editable=()), _guarded(FORGET), _guarded(RETAIN), FAST)


def test_a_single_forget_example_is_enough(trained: list[StageWeights]) -> None:
    model = _model(trained)
    result = laf(model, _guarded(FORGET[:1]), _guarded(RETAIN), CHEAP)
    assert result.steps == CHEAP.epochs
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert _moved_adapters(model, trained)


def _moved_adapters(model: PrefixModel, trained: list[StageWeights]) -> bool:
    before = _model(trained).export()
    return any(
        not torch.equal(stage.adapters[k].a, old.adapters[k].a)
        for stage, old in zip(model.export(), before, strict=True)
        for k in stage.adapters
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("latent_dims", 0),
        ("vae_epochs", 0),
        ("epochs", 0),
        ("batch_size", 0),
        ("vae_batch_size", 0),
        ("repair_epochs", 0),
        ("vae_hidden", (16, 0)),
        ("vae_lr", 0.0),
        ("lr_ue", -1e-3),
        ("lr_ra", float("nan")),
        ("temperature", 0.0),
        ("repair_lr", float("inf")),
        ("kl_weight", -0.1),
    ],
)
def test_bad_configs_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        LAFConfig(**{field: value})  # type: ignore[arg-type]


def test_the_losses_follow_the_official_formulas() -> None:
    e = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    out = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # d = (1, 0)
    assert float(nmse(out, e)) == pytest.approx(float(torch.exp(torch.tensor(0.5))) + 1.0)
    r = torch.tensor([[1.0, 0.0]])
    f, f_teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0]] * 2)
    # c1 = 0; c2 = (0, 1): L = log(1 / (exp(0) + exp(1 / 2))).
    expected = -float(torch.log(1 + torch.exp(torch.tensor(0.5))))
    assert float(alignment_loss(r, r, f, f_teacher, 2.0)) == pytest.approx(expected)
