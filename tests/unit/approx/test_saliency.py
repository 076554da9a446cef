"""Saliency masks, SalUn and RBM on a tiny trained prefix."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from tests.tiny_models import tiny_backbone
from tests.unit.approx import test_methods
from tests.unit.approx.test_methods import (
    CONFIG,
    FORGET,
    RETAIN,
    _examples,
    _loss,
    _model,
    _rows,
)
from unlearning.approx import Examples, PrefixModel, UnlearningInputError
from unlearning.approx.baselines import TrainConfig
from unlearning.approx.saliency import (
    Mask,
    RBMConfig,
    SalUnConfig,
    gradient_mask,
    masked_finetune,
    rbm,
    reset_masked,
    saliency,
    salun,
    top_mask,
)
from unlearning.artifacts import LocalArtifactStore
from unlearning.s3t import ModelSpec, S3TEngine, TrainingSample
from unlearning.s3t.backbone import Encoded
from unlearning.s3t.weights import StageWeights

trained = test_methods.trained  # the fixture: a tiny prefix trained on FORGET + RETAIN

# Forget rows with words of their own (and labels against the retain rule), so that the prefix
# must memorise them: unlearning them need not hurt the retain set.
ODD = ("violin", "piano", "cello", "flute")
OWN_FORGET = [(f"{ODD[i % 4]} {ODD[(i + 1) % 4]} item {i}", (i * 2 + 1) % 3) for i in range(8)]
OWN_RETAIN = _rows(40)


@pytest.fixture(scope="module")
def memorised(tmp_path_factory: pytest.TempPathFactory) -> list[StageWeights]:
    engine = S3TEngine(tiny_backbone(4), LocalArtifactStore(tmp_path_factory.mktemp("saliency")))
    samples = [
        TrainingSample(f"s{i:03d}", 0, i % 2, text, label)
        for i, (text, label) in enumerate(OWN_RETAIN + OWN_FORGET)
    ]
    layers = engine.train(ModelSpec(CONFIG, ((0, 1),)), samples)
    return [engine.load_stage(layer.artifact) for layer in sorted(layers, key=lambda x: x.stage)]


def _snapshot(model: PrefixModel) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def _assert_frozen_outside(model: PrefixModel, before: dict[str, torch.Tensor], mask: Mask) -> int:
    """Byte-identical where the mask is 0; returns how many masked coordinates moved."""
    moved = 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        keep = mask[name] == 0
        now, then = p.detach().view(torch.int32), before[name].view(torch.int32)
        assert torch.equal(now[keep], then[keep]), name
        moved += int((now[~keep] != then[~keep]).sum())
    return moved


def _accuracy(model: PrefixModel, examples: Examples) -> float:
    with torch.no_grad():
        return float((model(examples.encoded).argmax(-1) == examples.targets).float().mean())


def _same(first: Mask, second: Mask) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("share", [0.1, 0.5, 1.0])
def test_the_mask_covers_exactly_the_share(trained: list[StageWeights], share: float) -> None:
    model, forget = _model(trained), _examples(FORGET)
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    scores = saliency(model, forget)
    total = sum(s.numel() for s in scores.values())
    for largest in (True, False):
        mask = gradient_mask(model, forget, share, largest=largest)
        assert mask.keys() == names == scores.keys()
        values = torch.cat([m.flatten() for m in mask.values()])
        assert bool(((values == 0) | (values == 1)).all())
        assert int(values.sum()) == round(share * total)
        assert _same(mask, gradient_mask(model, forget, share, largest=largest))
        if share < 1:
            chosen = torch.cat([s[mask[k] == 1] for k, s in scores.items()])
            rest = torch.cat([s[mask[k] == 0] for k, s in scores.items()])
            if largest:
                assert chosen.min() >= rest.max()
            else:
                assert chosen.max() <= rest.min()
    # The gradient pass leaves no gradients behind.
    assert all(p.grad is None for p in model.parameters())


def test_ties_go_to_the_earlier_coordinate() -> None:
    scores = {"a": torch.tensor([1.0, 2.0, 2.0]), "b": torch.tensor([[2.0, 0.0]])}
    top = top_mask(scores, 0.4)  # 2 of 5
    assert top["a"].tolist() == [0.0, 1.0, 1.0] and top["b"].tolist() == [[0.0, 0.0]]
    low = top_mask(scores, 0.4, largest=False)
    assert low["a"].tolist() == [1.0, 0.0, 0.0] and low["b"].tolist() == [[0.0, 1.0]]
    with pytest.raises(ValueError, match="share"):
        top_mask(scores, 0.0)


def test_salun_updates_only_the_forget_salient_weights(trained: list[StageWeights]) -> None:
    model, forget, retain = _model(trained), _examples(FORGET), _examples(RETAIN)
    before = _snapshot(model)
    mask = salun(model, forget, retain, n_labels=3, config=SalUnConfig(epochs=2, lr=5e-3))
    assert _same(mask, gradient_mask(_model(trained), forget, 0.5))
    assert _assert_frozen_outside(model, before, mask) > 0


def test_salun_forgets_more_than_it_hurts_the_retain_set(
    memorised: list[StageWeights],
) -> None:
    model, forget, retain = _model(memorised), _examples(OWN_FORGET), _examples(OWN_RETAIN)
    f0, r0, a0 = _loss(model, forget), _loss(model, retain), _accuracy(model, forget)
    salun(model, forget, retain, n_labels=3, config=SalUnConfig(epochs=2, lr=1e-2, batch_size=8))
    f1, r1 = _loss(model, forget), _loss(model, retain)
    assert f1 > f0 and (r1 - r0) < (f1 - f0)
    assert _accuracy(model, forget) < a0


def test_rbm_masks_by_retain_saliency(trained: list[StageWeights]) -> None:
    forget, retain = _examples(FORGET), _examples(RETAIN)
    config = RBMConfig(variant="masked_finetune", epochs=1)
    mask = rbm(_model(trained), forget, retain, config)
    assert _same(mask, gradient_mask(_model(trained), retain, 0.5, largest=False))
    assert not _same(mask, gradient_mask(_model(trained), forget, 0.5))
    largest = rbm(_model(trained), forget, retain, dataclasses.replace(config, select="largest"))
    assert _same(largest, gradient_mask(_model(trained), retain, 0.5))


def test_rbm_variant_a_fine_tunes_only_the_masked_weights(trained: list[StageWeights]) -> None:
    model, retain = _model(trained), _examples(RETAIN)
    before, r0 = _snapshot(model), _loss(model, retain)
    config = RBMConfig(variant="masked_finetune", epochs=2, lr=1e-2, batch_size=8)
    mask = rbm(model, _examples(FORGET), retain, config)
    assert _assert_frozen_outside(model, before, mask) > 0
    assert _loss(model, retain) < r0


def test_rbm_variant_b_zeroes_the_masked_weights_then_fine_tunes(
    trained: list[StageWeights],
) -> None:
    forget, retain = _examples(FORGET), _examples(RETAIN)
    # One Adam step moves each coordinate by at most about `lr`: the masked ones stay near 0.
    model = _model(trained)
    before = _snapshot(model)
    lr = 1e-6
    mask = rbm(model, forget, retain, RBMConfig(epochs=1, lr=lr, batch_size=len(RETAIN)))
    assert _assert_frozen_outside(model, before, mask) > 0
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert torch.all(p.detach()[mask[name] == 1].abs() <= 2 * lr), name
    # It is exactly: zero the masked weights, then fine-tune them on the retain set.
    config = RBMConfig(epochs=2, lr=5e-3)
    edited, expected = _model(trained), _model(trained)
    mask = rbm(edited, forget, retain, config)
    reset_masked(expected, mask)
    masked_finetune(expected, retain, mask, config.training)
    assert _same(_snapshot(edited), _snapshot(expected))


def _regression(stages: list[StageWeights]) -> list[StageWeights]:
    last = stages[-1]
    head = dataclasses.replace(last, head_weight=last.head_weight[:1], head_bias=last.head_bias[:1])
    return [*stages[:-1], head]


def test_rbm_works_for_regression(trained: list[StageWeights]) -> None:
    model = _model(_regression(trained))
    forget = Examples(_examples(FORGET).encoded, torch.linspace(0, 1, len(FORGET)))
    retain = Examples(_examples(RETAIN).encoded, torch.linspace(0, 1, len(RETAIN)))
    before, r0 = _snapshot(model), _loss(model, retain)
    config = RBMConfig(variant="masked_finetune", epochs=2, lr=1e-2, batch_size=8)
    mask = rbm(model, forget, retain, config)
    assert _assert_frozen_outside(model, before, mask) > 0
    assert _loss(model, retain) < r0
    rbm(_model(_regression(trained)), forget, retain, RBMConfig(epochs=1))


def test_rbm_can_add_random_labels_on_the_forget_set(trained: list[StageWeights]) -> None:
    forget, retain = _examples(FORGET), _examples(RETAIN)
    config = RBMConfig(variant="masked_finetune", loss="random_labels", epochs=2, lr=5e-3)
    plain, relabelled = _model(trained), _model(trained)
    rbm(plain, forget, retain, dataclasses.replace(config, loss="retain"))
    mask = rbm(relabelled, forget, retain, config, n_labels=3)
    assert not _same(_snapshot(plain), _snapshot(relabelled))
    # The same as masked training on the forget set with other labels (as RL draws them) + retain.
    assert forget.targets is not None
    shift = torch.randint(1, 3, (len(FORGET),), generator=torch.Generator().manual_seed(0))
    wrong = Examples(forget.encoded, (forget.targets + shift) % 3)
    assert not bool(torch.any(shift % 3 == 0))
    expected = _model(trained)
    masked_finetune(expected, Examples.join(wrong, retain), mask, config.training)
    assert _same(_snapshot(relabelled), _snapshot(expected))
    with pytest.raises(UnlearningInputError, match="classification"):
        rbm(_model(trained), forget, retain, config)  # no n_labels


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (SalUnConfig, {"share": 0.0}, "share"),
        (SalUnConfig, {"share": 1.5}, "share"),
        (SalUnConfig, {"epochs": 0}, "epochs"),
        (SalUnConfig, {"lr": 0.0}, "lr"),
        (SalUnConfig, {"batch_size": 0}, "batch_size"),
        (RBMConfig, {"share": -0.1}, "share"),
        (RBMConfig, {"variant": "prune"}, "variant"),
        (RBMConfig, {"select": "middle"}, "select"),
        (RBMConfig, {"loss": "ascent"}, "loss"),
        (RBMConfig, {"lr": -1.0}, "lr"),
    ],
)
def test_configs_refuse_bad_values(cls: Any, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_defaults() -> None:
    assert SalUnConfig() == SalUnConfig(share=0.5, epochs=10, lr=1e-3, batch_size=32, seed=0)
    assert RBMConfig().variant == "reset_then_finetune" and RBMConfig().select == "smallest"
    assert SalUnConfig(epochs=3).training == TrainConfig(epochs=3)


def test_unusable_inputs_are_refused(trained: list[StageWeights]) -> None:
    model = _model(trained)
    empty = Examples(
        Encoded(torch.zeros((0, 16), dtype=torch.long), torch.zeros((0, 16), dtype=torch.long)),
        torch.zeros(0, dtype=torch.long),
    )
    forget, retain = _examples(FORGET), _examples(RETAIN)
    values = Examples(forget.encoded, torch.zeros(len(FORGET)))
    with pytest.raises(UnlearningInputError, match="forget set is empty"):
        salun(model, empty, retain, n_labels=3)
    with pytest.raises(UnlearningInputError, match="classification"):
        salun(model, values, retain, n_labels=3)
    with pytest.raises(UnlearningInputError, match="classification"):
        salun(model, forget, retain, n_labels=1)
    with pytest.raises(UnlearningInputError, match="forget set is empty"):
        rbm(model, empty, retain)
    with pytest.raises(UnlearningInputError, match="retain set is empty"):
        rbm(model, forget, empty)
    with pytest.raises(ValueError, match="trainable parameters"):
        masked_finetune(model, retain, {"head.weight": torch.ones(3, 32)}, TrainConfig())
    # Nothing was edited by the refused calls.
    assert _same(_snapshot(model), _snapshot(_model(trained)))
