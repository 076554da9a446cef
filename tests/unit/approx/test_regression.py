"""Deep regression unlearning (Blindspot, Gaussian fine-tuning) on a tiny trained regression
prefix: the forget cohort (one topic, only seen in its samples) is forgotten, the rest kept."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch

from tests.tiny_models import TINY_SETTINGS, tiny_backbone
from unlearning.approx import Examples, PrefixModel, UnlearningInputError, regression
from unlearning.approx.regression import (
    BlindspotConfig,
    GaussianConfig,
    attention_map,
    blindspot,
    gaussian_finetune,
    train_blindspot,
)
from unlearning.artifacts import LocalArtifactStore
from unlearning.s3t import ModelSpec, S3TConfig, S3TEngine, TrainingSample
from unlearning.s3t.config import Task
from unlearning.s3t.weights import StageWeights

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS: dict[str, Any] = {**TINY_SETTINGS, "epochs_per_stage": 4, "learning_rate": 2e-2}
CONFIG = S3TConfig(n_shards=1, n_slices=2, budget=1, task=Task.REGRESSION, n_labels=1, **SETTINGS)
WORDS = (("stocks", "market", "shares"), ("match", "goal", "league"), ("chip", "software", "cloud"))
VALUES = (0.0, 1.0, 3.0)


def _rows(n: int, topics: tuple[int, ...]) -> list[tuple[str, float]]:
    rows = []
    for i in range(n):
        topic = topics[i % len(topics)]
        words = WORDS[topic]
        rows.append((f"{words[i % 3]} {words[(i * 2) % 3]} item {i}", VALUES[topic]))
    return rows


#: The forget cohort is the only topic-2 data; the retain set covers topics 0 and 1.
FORGET = _rows(12, (2,))
RETAIN = _rows(36, (0, 1))

FAST = BlindspotConfig(blindspot_epochs=3, blindspot_lr=1e-2, epochs=3, lr=5e-3, batch_size=8)
GAUSS = GaussianConfig(epochs=3, lr=5e-3, batch_size=8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> list[StageWeights]:
    engine = S3TEngine(tiny_backbone(4), LocalArtifactStore(tmp_path_factory.mktemp("regr")))
    samples = [
        TrainingSample(f"s{i:03d}", 0, i % 2, text, value)
        for i, (text, value) in enumerate(FORGET + RETAIN)
    ]
    layers = engine.train(ModelSpec(CONFIG, ((0, 1),)), samples)
    return [engine.load_stage(layer.artifact) for layer in sorted(layers, key=lambda x: x.stage)]


def _model(stages: list[StageWeights], editable: tuple[int, ...] = (0, 1)) -> PrefixModel:
    return PrefixModel(
        tiny_backbone(4), stages, editable=editable, target_modules=CONFIG.target_modules
    )


def _examples(rows: list[tuple[str, float]]) -> Examples:
    encoded = tiny_backbone(4).encode([t for t, _ in rows], CONFIG.max_length)
    return Examples(encoded, torch.tensor([value for _, value in rows]))


def _mae(model: PrefixModel, examples: Examples) -> float:
    assert examples.targets is not None
    with torch.no_grad():
        return float((model(examples.encoded).squeeze(-1) - examples.targets).abs().mean())


def _parameters(model: PrefixModel) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_the_trained_prefix_fits_the_forget_cohort(trained: list[StageWeights]) -> None:
    model = _model(trained)
    assert _mae(model, _examples(FORGET)) < 0.5
    assert _mae(model, _examples(RETAIN)) < 0.5


def test_blindspot_forgets_the_cohort_and_keeps_the_rest(trained: list[StageWeights]) -> None:
    forget, retain = _examples(FORGET), _examples(RETAIN)
    model = _model(trained)
    f0, r0 = _mae(model, forget), _mae(model, retain)
    blindspot(model, forget, retain, FAST)
    f1, r1 = _mae(model, forget), _mae(model, retain)
    assert f1 - f0 > 0.5
    assert (r1 - r0) < (f1 - f0) / 4


def test_gaussian_finetuning_forgets_the_cohort_and_keeps_the_rest(
    trained: list[StageWeights],
) -> None:
    forget, retain = _examples(FORGET), _examples(RETAIN)
    model = _model(trained)
    f0, r0 = _mae(model, forget), _mae(model, retain)
    gaussian_finetune(model, forget, retain, GAUSS)
    f1, r1 = _mae(model, forget), _mae(model, retain)
    assert f1 - f0 > 0.5
    assert (r1 - r0) < (f1 - f0) / 4


def test_the_blindspot_model_is_trained_on_retain_rows_only(
    trained: list[StageWeights], monkeypatch: pytest.MonkeyPatch
) -> None:
    forget, retain = _examples(FORGET), _examples(RETAIN)
    seen: list[Examples] = []
    real = regression.train_blindspot

    def spy(model: PrefixModel, data: Examples, config: BlindspotConfig | None = None) -> Any:
        seen.append(data)
        return real(model, data, config)

    monkeypatch.setattr(regression, "train_blindspot", spy)
    # Forget targets are never read: NaN ones (or none at all) change nothing.
    model, unlabelled = _model(trained), _model(trained)
    blindspot(
        model,
        dataclasses.replace(forget, targets=torch.full((len(forget),), math.nan)),
        retain,
        FAST,
    )
    blindspot(unlabelled, dataclasses.replace(forget, targets=None), retain, FAST)
    assert len(seen) == 2
    for data in seen:
        assert data is retain
    after, expected = _parameters(model), _parameters(unlabelled)
    assert all(torch.isfinite(p).all() and torch.equal(p, expected[n]) for n, p in after.items())


def test_the_blindspot_model_is_fresh_and_leaves_the_prefix_alone(
    trained: list[StageWeights],
) -> None:
    forget, retain = _examples(FORGET), _examples(RETAIN)
    model = _model(trained, editable=(1,))
    before = _parameters(model)
    blind = train_blindspot(model, retain, FAST)
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    assert not any(p.requires_grad for p in blind.parameters())
    first, second = blind.export()
    assert first.to_bytes() == trained[0].to_bytes()  # the frozen stage is shared
    assert all(
        not torch.equal(second.adapters[k].a, trained[1].adapters[k].a) for k in second.adapters
    )
    # It never saw the cohort: it gets the retain set roughly right and the forget set wrong.
    assert _mae(blind, forget) > 1.0 > _mae(blind, retain)
    # Seeded: the same settings give the same model.
    again = train_blindspot(model, retain, FAST)
    assert _parameters(again).keys() == _parameters(blind).keys()
    assert all(torch.equal(p, _parameters(blind)[n]) for n, p in _parameters(again).items())


def test_the_blindspot_model_sees_its_share_of_the_retain_set(
    trained: list[StageWeights], monkeypatch: pytest.MonkeyPatch
) -> None:
    retain = _examples(RETAIN)
    fitted: list[Examples] = []
    monkeypatch.setattr(regression, "_fit", lambda _model, data, *_a, **_k: fitted.append(data))
    train_blindspot(_model(trained), retain, dataclasses.replace(FAST, retain_fraction=0.5))
    (data,) = fitted
    assert len(data) == len(retain) // 2
    rows = {tuple(r) for r in retain.encoded.inputs.tolist()}
    assert {tuple(r) for r in data.encoded.inputs.tolist()} <= rows


def test_frozen_stages_stay_byte_identical(trained: list[StageWeights]) -> None:
    forget, retain = _examples(FORGET), _examples(RETAIN)
    edited = _model(trained, editable=(1,)), _model(trained, editable=(1,))
    blindspot(edited[0], forget, retain, FAST)
    gaussian_finetune(edited[1], forget, retain, GAUSS)
    for model in edited:
        first, second = model.export()
        assert first.to_bytes() == trained[0].to_bytes()
        assert second.to_bytes() != trained[1].to_bytes()


def test_gaussian_noise_from_retain_statistics_needs_no_forget_targets(
    trained: list[StageWeights],
) -> None:
    forget, retain = _examples(FORGET), _examples(RETAIN)
    config = dataclasses.replace(GAUSS, statistics="retain", epochs=1)
    model, control = _model(trained), _model(trained)
    gaussian_finetune(model, dataclasses.replace(forget, targets=None), retain, config)
    gaussian_finetune(control, forget, retain, config)
    expected = _parameters(control)
    assert all(torch.equal(p, expected[n]) for n, p in _parameters(model).items())
    with pytest.raises(UnlearningInputError, match="no labels"):
        gaussian_finetune(model, dataclasses.replace(forget, targets=None), retain, GAUSS)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: BlindspotConfig(blindspot_epochs=0), "blindspot_epochs"),
        (lambda: BlindspotConfig(blindspot_lr=0.0), "blindspot_lr"),
        (lambda: BlindspotConfig(retain_fraction=0.0), "retain_fraction"),
        (lambda: BlindspotConfig(retain_fraction=1.5), "retain_fraction"),
        (lambda: BlindspotConfig(attention_weight=-1.0), "attention_weight"),
        (lambda: BlindspotConfig(attention_weight=math.inf), "attention_weight"),
        (lambda: BlindspotConfig(epochs=0), "epochs"),
        (lambda: BlindspotConfig(lr=math.nan), "lr"),
        (lambda: BlindspotConfig(batch_size=0), "batch_size"),
        (lambda: BlindspotConfig(seed=-1), "seed"),
        (lambda: GaussianConfig(epochs=0), "epochs"),
        (lambda: GaussianConfig(lr=-1.0), "lr"),
        (lambda: GaussianConfig(batch_size=0), "batch_size"),
        (lambda: GaussianConfig(statistics="forget"), "statistics"),  # type: ignore[arg-type]
        (lambda: GaussianConfig(seed=True), "seed"),
    ],
)
def test_configs_refuse_bad_values(make: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        make()


def test_classification_inputs_are_refused(trained: list[StageWeights]) -> None:
    forget, retain = _examples(FORGET), _examples(RETAIN)
    labels = Examples(retain.encoded, torch.zeros(len(retain), dtype=torch.long))
    forget_labels = Examples(forget.encoded, torch.zeros(len(forget), dtype=torch.long))
    empty = Examples(forget.encoded.rows(torch.arange(0)), torch.zeros(0))
    model = _model(trained)
    for method in (blindspot, gaussian_finetune):
        with pytest.raises(UnlearningInputError, match="class labels"):
            method(model, forget, labels)
        with pytest.raises(UnlearningInputError, match="class labels"):
            method(model, forget_labels, retain)
        with pytest.raises(UnlearningInputError, match="forget set is empty"):
            method(model, empty, retain)
        with pytest.raises(UnlearningInputError, match="retain set has no labels"):
            method(model, forget, dataclasses.replace(retain, targets=None))
    with pytest.raises(UnlearningInputError, match="class labels"):
        train_blindspot(model, labels)
    last = trained[-1]
    classifier = _model(
        [
            trained[0],
            dataclasses.replace(last, head_weight=torch.zeros(3, 32), head_bias=torch.zeros(3)),
        ]
    )
    for method in (blindspot, gaussian_finetune):
        with pytest.raises(UnlearningInputError, match="regression model"):
            method(classifier, forget, retain)
    assert _parameters(model).keys() == _parameters(_model(trained)).keys()
    assert all(
        torch.equal(p, _parameters(_model(trained))[n]) for n, p in _parameters(model).items()
    )


def test_the_attention_map_ignores_padding_and_has_unit_norm() -> None:
    hidden = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    att = attention_map(hidden, mask)
    assert att.shape == (2, 5)
    assert torch.all(att[0, 3:] == 0)
    assert torch.allclose(att.norm(dim=-1), torch.ones(2))
    assert torch.allclose(att[0, :3], attention_map(hidden[:1, :3], mask[:1, :3])[0])
