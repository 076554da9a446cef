"""Approximate unlearning on a tiny trained prefix: each method's defining property."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.tiny_models import TINY_SETTINGS, tiny_backbone
from unlearning.approx import Examples, PrefixModel, UnlearningInputError
from unlearning.approx.baselines import TrainConfig, finetune, random_labels
from unlearning.approx.data import task_loss
from unlearning.approx.gradient_ascent import GradientAscentConfig, gradient_ascent
from unlearning.approx.iau import IAUConfig, full_data_gradient, gradient_norm_penalty, iau
from unlearning.approx.ssd import SSDConfig, importance, ssd
from unlearning.artifacts import LocalArtifactStore
from unlearning.s3t import ModelSpec, S3TConfig, S3TEngine, TrainingSample
from unlearning.s3t.backbone import Encoded
from unlearning.s3t.ensemble import EnsemblePredictor, ServedShard
from unlearning.s3t.weights import StageWeights

CONFIG = S3TConfig(n_shards=1, n_slices=2, budget=1, n_labels=3, **TINY_SETTINGS)  # type: ignore[arg-type]
WORDS = (("stocks", "market", "shares"), ("match", "goal", "league"), ("chip", "software", "cloud"))


def _rows(n: int, offset: int = 0) -> list[tuple[str, int]]:
    return [
        (
            f"{WORDS[(i + offset) % 3][i % 3]} {WORDS[(i + offset) % 3][(i * 2) % 3]} item {i}",
            (i + offset) % 3,
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> list[StageWeights]:
    engine = S3TEngine(tiny_backbone(4), LocalArtifactStore(tmp_path_factory.mktemp("approx")))
    samples = [
        TrainingSample(f"s{i:03d}", 0, i % 2, text, label)
        for i, (text, label) in enumerate(_rows(48))
    ]
    layers = engine.train(ModelSpec(CONFIG, ((0, 1),)), samples)
    return [engine.load_stage(layer.artifact) for layer in sorted(layers, key=lambda x: x.stage)]


def _model(stages: list[StageWeights], editable: tuple[int, ...] = (0, 1)) -> PrefixModel:
    return PrefixModel(
        tiny_backbone(4), stages, editable=editable, target_modules=CONFIG.target_modules
    )


def _examples(rows: list[tuple[str, int]]) -> Examples:
    encoded = tiny_backbone(4).encode([t for t, _ in rows], CONFIG.max_length)
    return Examples(encoded, torch.tensor([label for _, label in rows]))


FORGET = _rows(8)
RETAIN = _rows(40, offset=0)[8:]


def _loss(model: PrefixModel, examples: Examples) -> float:
    with torch.no_grad():
        assert examples.targets is not None
        return float(task_loss(model(examples.encoded), examples.targets))


def test_the_prefix_model_computes_what_serving_computes(trained: list[StageWeights]) -> None:
    predictor = EnsemblePredictor(tiny_backbone(4), CONFIG.target_modules)
    encoded = tiny_backbone(4).encode(["stocks market item", "goal match item"], CONFIG.max_length)
    expected = predictor.shard_outputs(encoded, [ServedShard.from_prefix(trained)])[0]
    with torch.no_grad():
        assert torch.allclose(_model(trained)(encoded), expected, atol=1e-5)
    # Exporting without an edit gives the same tensors back.
    for before, after in zip(trained, _model(trained).export(), strict=True):
        assert before.adapters.keys() == after.adapters.keys()
        assert all(torch.equal(before.adapters[k].a, after.adapters[k].a) for k in before.adapters)
        assert torch.equal(before.head_weight, after.head_weight)


def test_ssd_dampens_only_what_the_forget_set_matters_to(trained: list[StageWeights]) -> None:
    model = _model(trained)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    forget, data = _examples(FORGET), _examples(_rows(40))
    result = ssd(model, forget, data, SSDConfig(alpha=2.0))
    assert 0 < result.selected < result.total
    changed = 0
    for name, p in model.named_parameters():
        moved = p.detach() != before[name]
        changed += int(moved.sum())
        # Unselected entries are byte-identical; selected ones only shrink towards zero.
        assert torch.all(p.detach().abs() <= before[name].abs())
    assert 0 < changed <= result.selected


def test_iau_raises_the_forget_loss_more_than_the_retain_loss(trained: list[StageWeights]) -> None:
    model = _model(trained)
    forget, retain = _examples(FORGET), _examples(RETAIN)
    f0, r0 = _loss(model, forget), _loss(model, retain)
    iau(model, forget, retain, IAUConfig(lr=5e-3))
    f1, r1 = _loss(model, forget), _loss(model, retain)
    assert f1 > f0 and (r1 - r0) < (f1 - f0)


def _same_parameters(first: PrefixModel, second: PrefixModel) -> None:
    theirs = dict(second.named_parameters())
    assert theirs.keys() == dict(first.named_parameters()).keys()
    for name, p in first.named_parameters():
        assert torch.allclose(p, theirs[name], atol=1e-6, rtol=1e-5), name


def _moved(model: PrefixModel, trained: list[StageWeights]) -> bool:
    """Whether an edit changed any of ``model``'s parameters."""
    before = dict(_model(trained, editable=tuple(model.editable)).named_parameters())
    return any(not torch.equal(p, before[name]) for name, p in model.named_parameters())


def test_ssd_with_the_cached_data_importance_makes_the_same_edit(
    trained: list[StageWeights],
) -> None:
    forget, data = _examples(FORGET), _examples(_rows(40))
    config = SSDConfig(alpha=2.0)
    # Cached once on the whole prefix (every stage editable), reused by a pass that edits the
    # last stage only: the entries it needs are the same.
    cache = importance(_model(trained), data, config.batch_size)
    uncached, cached = _model(trained, editable=(1,)), _model(trained, editable=(1,))
    expected = ssd(uncached, forget, data, config)
    result = ssd(cached, forget, config=config, data_importance=cache)
    assert result == expected and result.selected > 0
    _same_parameters(cached, uncached)
    assert _moved(cached, trained)
    with pytest.raises(ValueError, match="either"):
        ssd(_model(trained), forget, data, config, data_importance=cache)
    with pytest.raises(ValueError, match="no entry"):
        ssd(
            _model(trained),
            forget,
            config=config,
            data_importance={"head.weight": cache["head.weight"]},
        )


def test_iau_with_the_cached_data_gradient_makes_the_same_step(
    trained: list[StageWeights],
) -> None:
    forget, retain = _examples(FORGET), _examples(RETAIN)
    config = IAUConfig(lr=5e-3)
    cache = full_data_gradient(_model(trained), Examples.join(retain, forget), config.batch_size)
    assert cache.count == len(FORGET) + len(RETAIN)
    uncached, cached = _model(trained, editable=(1,)), _model(trained, editable=(1,))
    iau(uncached, forget, retain, config)
    iau(cached, forget, None, config, data_gradient=cache)
    _same_parameters(cached, uncached)
    assert _moved(cached, trained)
    # The retain set, when given, must be the rest of the cached data.
    with pytest.raises(UnlearningInputError, match="make up the cached data"):
        iau(_model(trained), forget, _examples(RETAIN[:-1]), config, data_gradient=cache)
    with pytest.raises(UnlearningInputError, match="retain set"):
        iau(_model(trained), forget, None, config)


def test_cached_bottom_states_give_the_same_outputs(trained: list[StageWeights]) -> None:
    model = _model(trained)
    encoded = _examples(FORGET).encoded
    with torch.no_grad():
        bottom = model.backbone.hidden_at(encoded, model.depth)
        assert torch.equal(model(encoded, bottom), model(encoded))


def test_the_baselines_move_the_losses_their_way(trained: list[StageWeights]) -> None:
    forget, retain = _examples(FORGET), _examples(RETAIN)
    ft = _model(trained)
    r0 = _loss(ft, retain)
    finetune(ft, retain, TrainConfig(epochs=2, lr=5e-3))
    assert _loss(ft, retain) < r0
    ga = _model(trained)
    f0 = _loss(ga, forget)
    gradient_ascent(ga, forget, GradientAscentConfig(lr=5e-3))
    assert _loss(ga, forget) > f0
    # RL is the same training as on forget + retain with true labels, but for the relabelling.
    config = TrainConfig(epochs=2, lr=5e-3)
    rl, control = _model(trained), _model(trained)
    random_labels(rl, forget, retain, n_labels=3, config=config)
    finetune(control, Examples.join(forget, retain), config)
    assert _loss(rl, forget) > _loss(control, forget)


def test_only_editable_stages_change(trained: list[StageWeights]) -> None:
    model = _model(trained, editable=(1,))
    gradient_ascent(model, _examples(FORGET), GradientAscentConfig(lr=5e-3))
    first, second = model.export()
    assert all(torch.equal(first.adapters[k].a, trained[0].adapters[k].a) for k in first.adapters)
    assert any(
        not torch.equal(second.adapters[k].a, trained[1].adapters[k].a) for k in second.adapters
    )


def test_unusable_inputs_are_refused(trained: list[StageWeights]) -> None:
    model = _model(trained)
    empty = Examples(
        Encoded(torch.zeros((0, 16), dtype=torch.long), torch.zeros((0, 16), dtype=torch.long)),
        torch.zeros(0, dtype=torch.long),
    )
    unlabelled = dataclasses.replace(_examples(FORGET), targets=None)
    values = Examples(_examples(FORGET).encoded, torch.zeros(len(FORGET)))
    retain = _examples(RETAIN)
    with pytest.raises(UnlearningInputError, match="forget set is empty"):
        ssd(model, empty, retain)
    with pytest.raises(UnlearningInputError, match="no labels"):
        iau(model, unlabelled, retain)
    with pytest.raises(UnlearningInputError, match="classification"):
        random_labels(model, values, retain, n_labels=3)
    with pytest.raises(UnlearningInputError, match="one target per input"):
        Examples(_examples(FORGET).encoded, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="alpha"):
        SSDConfig(alpha=0)


def test_gradient_norm_penalty_adds_the_norms() -> None:
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    loss = (w**2).sum() / 2  # gradient = w, norm 5
    penalised = gradient_norm_penalty(loss, [w], alpha=0.1)
    assert float(penalised.detach()) == pytest.approx(12.5 + 0.5)
