"""l1-sparse unlearning and prune-then-unlearn on the tiny trained prefix of test_methods."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.unit.approx.test_methods import (
    RETAIN,
    _examples,
    _loss,
    _model,
    trained,  # noqa: F401  (the module-scoped fixture)
)
from unlearning.approx import Examples, UnlearningInputError
from unlearning.approx.baselines import TrainConfig, finetune
from unlearning.approx.sparsity import (
    L1SparseConfig,
    PruneConfig,
    l1_norm,
    l1_sparse,
    l1_weight,
    magnitude_masks,
    prune_then_unlearn,
)
from unlearning.s3t.backbone import Encoded
from unlearning.s3t.weights import StageWeights

FAST = L1SparseConfig(epochs=2, lr=5e-3, alpha=0.0)


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def test_the_l1_weight_decays_linearly_per_epoch() -> None:
    config = L1SparseConfig(epochs=4, alpha=1.0)
    assert [l1_weight(t, config) for t in range(4)] == [1.0, 0.75, 0.5, 0.25]
    tail = L1SparseConfig(epochs=4, alpha=1.0, no_l1_epochs=2)
    assert [l1_weight(t, tail) for t in range(4)] == [1.0, 0.5, 0.0, 0.0]
    # As the official code: with no epoch left for the penalty, it stays at alpha.
    none_left = L1SparseConfig(epochs=2, alpha=1.0, no_l1_epochs=2)
    assert [l1_weight(t, none_left) for t in range(2)] == [1.0, 1.0]


def test_l1_sparse_without_penalty_is_finetune(trained: list[StageWeights]) -> None:  # noqa: F811
    retain = _examples(RETAIN)
    ours, theirs = _model(trained), _model(trained)
    l1_sparse(ours, retain, FAST)
    finetune(theirs, retain, TrainConfig(epochs=2, lr=5e-3))
    expected = _params(theirs)
    assert all(torch.equal(p, expected[name]) for name, p in _params(ours).items())


def test_l1_sparse_shrinks_the_weights_and_keeps_the_retain_loss(
    trained: list[StageWeights],  # noqa: F811
) -> None:
    retain = _examples(RETAIN)
    sparse, dense = _model(trained), _model(trained)
    r0 = _loss(sparse, retain)
    l1_sparse(sparse, retain, dataclasses.replace(FAST, alpha=3e-3))
    finetune(dense, retain, TrainConfig(epochs=2, lr=5e-3))
    assert float(l1_norm(sparse).detach()) < 0.9 * float(l1_norm(dense).detach())
    assert _loss(sparse, retain) < min(r0, _loss(dense, retain) + 0.1)


def test_magnitude_masks_zero_exactly_the_share(trained: list[StageWeights]) -> None:  # noqa: F811
    model = _model(trained)
    lora = {f"lora.{name}" for name in model.lora}
    n = sum(p.numel() for p in model.lora.values())
    for sparsity in (0.0, 0.3, 0.95):
        masks = magnitude_masks(model, sparsity)
        assert set(masks) == lora  # the head stays dense by default
        assert sum(int((m == 0).sum()) for m in masks.values()) == round(sparsity * n)
        assert all(bool(((m == 0) | (m == 1)).all()) for m in masks.values())
    # Global magnitude: every kept entry is at least as large as every pruned one.
    params = dict(model.named_parameters())
    masks = magnitude_masks(model, 0.5)
    pruned = torch.cat([params[k].detach().abs()[m == 0] for k, m in masks.items()])
    kept = torch.cat([params[k].detach().abs()[m == 1] for k, m in masks.items()])
    assert float(pruned.max()) <= float(kept.min())
    with_head = magnitude_masks(model, 0.5, include_head=True)
    total = n + model.head.weight.numel() + model.head.bias.numel()
    assert set(with_head) == lora | {"head.weight", "head.bias"}
    assert sum(int((m == 0).sum()) for m in with_head.values()) == round(0.5 * total)


def test_magnitude_masks_break_ties_deterministically(
    trained: list[StageWeights],  # noqa: F811
) -> None:
    model = _model(trained)
    with torch.no_grad():
        for p in model.lora.values():
            p.fill_(0.5)
    n = sum(p.numel() for p in model.lora.values())
    first, second = magnitude_masks(model, 0.4), magnitude_masks(model, 0.4)
    assert sum(int((m == 0).sum()) for m in first.values()) == round(0.4 * n)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_pruned_weights_stay_zero_and_frozen_stages_stay_identical(
    trained: list[StageWeights],  # noqa: F811
) -> None:
    model = _model(trained, editable=(1,))
    before = _params(model)
    retain = _examples(RETAIN)
    l1 = dataclasses.replace(FAST, alpha=1e-3)
    masks = prune_then_unlearn(model, retain, PruneConfig(sparsity=0.5), l1)
    assert masks and all(name.startswith("lora.s1_") for name in masks)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert bool((params[name].detach()[mask == 0] == 0).all())
        assert not torch.equal(params[name].detach()[mask == 1], before[name][mask == 1])
    first, second = model.export()
    frozen = trained[0]
    assert first.adapters.keys() == frozen.adapters.keys()
    for key, pair in first.adapters.items():
        assert torch.equal(pair.a, frozen.adapters[key].a)
        assert torch.equal(pair.b, frozen.adapters[key].b)
    assert torch.equal(first.head_weight, frozen.head_weight)
    assert torch.equal(first.head_bias, frozen.head_bias)
    assert not torch.equal(second.head_weight, trained[1].head_weight)
    # Precomputed masks give the same edit (and the pass is deterministic given the seed).
    again = _model(trained, editable=(1,))
    prune_then_unlearn(again, retain, l1=l1, masks=masks)
    expected = _params(model)
    assert all(torch.equal(p, expected[name]) for name, p in _params(again).items())


def test_bad_configs_and_masks_are_refused(trained: list[StageWeights]) -> None:  # noqa: F811
    for bad in (
        {"epochs": 0},
        {"lr": 0.0},
        {"batch_size": 0},
        {"alpha": -1e-4},
        {"alpha": float("nan")},
        {"no_l1_epochs": -1},
        {"epochs": 2, "no_l1_epochs": 3},
    ):
        with pytest.raises(ValueError, match="must"):
            L1SparseConfig(**bad)
    for sparsity in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="sparsity"):
            PruneConfig(sparsity=sparsity)
    with pytest.raises(ValueError, match="sparsity"):
        magnitude_masks(_model(trained), 1.0)
    model, retain = _model(trained), _examples(RETAIN)
    with pytest.raises(ValueError, match="either"):
        prune_then_unlearn(model, retain, PruneConfig(), masks={})
    with pytest.raises(ValueError, match="no trainable parameter"):
        prune_then_unlearn(model, retain, masks={"backbone.x": torch.ones(1)})
    with pytest.raises(ValueError, match="wrong shape"):
        prune_then_unlearn(model, retain, masks={"head.bias": torch.ones(1)})


def test_empty_or_unlabelled_retain_is_refused(trained: list[StageWeights]) -> None:  # noqa: F811
    model = _model(trained)
    before = _params(model)
    empty = Examples(
        Encoded(torch.zeros((0, 16), dtype=torch.long), torch.zeros((0, 16), dtype=torch.long)),
        torch.zeros(0, dtype=torch.long),
    )
    unlabelled = dataclasses.replace(_examples(RETAIN), targets=None)
    with pytest.raises(UnlearningInputError, match="retain set is empty"):
        l1_sparse(model, empty)
    with pytest.raises(UnlearningInputError, match="no labels"):
        l1_sparse(model, unlabelled)
    with pytest.raises(UnlearningInputError, match="retain set is empty"):
        prune_then_unlearn(model, empty)
    with pytest.raises(UnlearningInputError, match="no labels"):
        prune_then_unlearn(model, unlabelled)
    # Refused before any pruning.
    assert all(torch.equal(p, before[name]) for name, p in _params(model).items())
