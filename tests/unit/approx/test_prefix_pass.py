"""The service's entry point to the approximate methods: one pass over a served prefix."""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest
import torch

from service.db.models import Model
from service.models.schemas import MethodName
from tests.tiny_models import TINY_SETTINGS, tiny_backbone
from unlearning.approx import UnlearningInputError, registry
from unlearning.approx.model import PrefixModel
from unlearning.approx.prefix_pass import approximate_stages, examples_of, unfit
from unlearning.approx.registry import UnknownMethodError
from unlearning.approx.ssd import SSDConfig, authors_order, ssd
from unlearning.artifacts import LocalArtifactStore
from unlearning.families import Modality
from unlearning.s3t import ModelSpec, S3TConfig, S3TEngine, TrainingSample
from unlearning.s3t.config import Task
from unlearning.s3t.weights import StageWeights

CONFIG = S3TConfig(n_shards=1, n_slices=2, budget=1, n_labels=2, **TINY_SETTINGS)  # type: ignore[arg-type]
SAMPLES = [
    TrainingSample(f"s{i:03d}", 0, i % 2, f"{('good', 'bad')[i % 2]} thing {i}", i % 2)
    for i in range(24)
]
FORGET, RETAIN = SAMPLES[:4], SAMPLES[4:]
REGRESSION = dataclasses.replace(CONFIG, task=Task.REGRESSION, n_labels=1)
REGRESSION_SAMPLES = [dataclasses.replace(s, target=float(3 * s.target)) for s in SAMPLES]


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> list[StageWeights]:
    engine = S3TEngine(tiny_backbone(4), LocalArtifactStore(tmp_path_factory.mktemp("pass")))
    layers = sorted(engine.train(ModelSpec(CONFIG, ((0, 1),)), SAMPLES), key=lambda x: x.stage)
    return [engine.load_stage(layer.artifact) for layer in layers]


def _tensors(stage: StageWeights) -> list[torch.Tensor]:
    pairs = [stage.adapters[key] for key in sorted(stage.adapters)]
    return [t for pair in pairs for t in (pair.a, pair.b)] + [stage.head_weight, stage.head_bias]


@pytest.fixture(scope="module")
def regression_prefix(tmp_path_factory: pytest.TempPathFactory) -> list[StageWeights]:
    engine = S3TEngine(tiny_backbone(4), LocalArtifactStore(tmp_path_factory.mktemp("reg")))
    layers = engine.train(ModelSpec(REGRESSION, ((0, 1),)), REGRESSION_SAMPLES)
    return [engine.load_stage(layer.artifact) for layer in sorted(layers, key=lambda x: x.stage)]


@pytest.mark.parametrize("method", registry.names())
def test_a_pass_returns_the_edited_stages_only(
    prefix: list[StageWeights], regression_prefix: list[StageWeights], method: str
) -> None:
    """Every method runs by name: on the classification prefix, or on the regression one
    when it is made for regression."""
    backbone = tiny_backbone(4)
    fits = unfit(method, Task.CLASSIFICATION, Modality.TEXT) is None
    config, samples = (CONFIG, SAMPLES) if fits else (REGRESSION, REGRESSION_SAMPLES)
    prefix = prefix if fits else regression_prefix
    forget = samples[:4]
    forgets = registry.get(method).forgets
    if forgets == "classes":  # class unlearning: the forget set is one class
        forget = [s for s in samples if s.target == 0][:4]
    if forgets == "whole_classes":  # the whole class leaves
        forget = [s for s in samples if s.target == 0]
    retain = [s for s in samples if s not in forget]
    edited = approximate_stages(
        backbone,
        config,
        prefix,
        1,
        examples_of(backbone, config, forget),
        examples_of(backbone, config, retain),
        method,
    )
    assert len(edited) == 1 and edited[0].adapters.keys() == prefix[1].adapters.keys()
    before, after = _tensors(prefix[1]), _tensors(edited[0])
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))


def test_a_pass_refuses_what_it_cannot_use(prefix: list[StageWeights]) -> None:
    backbone = tiny_backbone(4)
    forget = examples_of(backbone, CONFIG, FORGET)
    retain = examples_of(backbone, CONFIG, RETAIN)
    with pytest.raises(UnlearningInputError, match="empty"):
        approximate_stages(
            backbone, CONFIG, prefix, 0, examples_of(backbone, CONFIG, []), retain, "ssd"
        )
    with pytest.raises(UnlearningInputError, match="no stage 2"):
        approximate_stages(backbone, CONFIG, prefix, 2, forget, retain, "ssd")
    with pytest.raises(UnlearningInputError, match="classification"):
        approximate_stages(backbone, REGRESSION, prefix, 1, forget, retain, "random_labels")
    with pytest.raises(UnlearningInputError, match="regression"):
        approximate_stages(backbone, CONFIG, prefix, 1, forget, retain, "blindspot")
    unlabelled = examples_of(backbone, CONFIG, FORGET)
    unlabelled = dataclasses.replace(unlabelled, targets=None)
    with pytest.raises(UnlearningInputError, match="no labels"):
        approximate_stages(backbone, CONFIG, prefix, 1, unlabelled, retain, "ssd")
    assert approximate_stages(backbone, CONFIG, prefix, 1, unlabelled, retain, "laf")


def test_an_unknown_method_is_refused_by_name(prefix: list[StageWeights]) -> None:
    backbone = tiny_backbone(4)
    forget = examples_of(backbone, CONFIG, FORGET)
    with pytest.raises(UnknownMethodError, match="no approximate method `nope`"):
        approximate_stages(backbone, CONFIG, prefix, 1, forget, None, "nope")
    with pytest.raises(UnknownMethodError):
        unfit("nope", Task.CLASSIFICATION, Modality.TEXT)


def test_a_pass_runs_with_the_given_config(prefix: list[StageWeights]) -> None:
    """A config override reaches the method: SSD with another `alpha` edits as SSD called
    directly with it does, and differently from the defaults."""
    backbone = tiny_backbone(4)
    forget = examples_of(backbone, CONFIG, FORGET)
    retain = examples_of(backbone, CONFIG, RETAIN)
    config = registry.get("ssd").configure({"alpha": 1.0})
    assert config == SSDConfig(alpha=1.0)
    edited = approximate_stages(
        backbone, CONFIG, prefix, 1, forget, retain, "ssd", method_config=config
    )
    model = PrefixModel(backbone, prefix, editable=[1], target_modules=CONFIG.target_modules)
    ssd(model, forget, authors_order(forget, retain), SSDConfig(alpha=1.0))
    assert all(
        torch.equal(a, b)
        for a, b in zip(_tensors(edited[0]), _tensors(model.export()[1]), strict=True)
    )
    default = approximate_stages(backbone, CONFIG, prefix, 1, forget, retain, "ssd")
    assert any(
        not torch.equal(a, b)
        for a, b in zip(_tensors(edited[0]), _tensors(default[0]), strict=True)
    )
    with pytest.raises(TypeError, match="SSDConfig"):
        approximate_stages(
            backbone, CONFIG, prefix, 1, forget, retain, "ssd", method_config=SSDConfig
        )


def test_the_service_offers_exactly_the_registered_methods_and_auto() -> None:
    assert list(get_args(MethodName)) == ["auto", *registry.names()]  # the OpenAPI enum
    assert Model(approximate_method="ssd").approximate_method == "ssd"
    assert Model(approximate_method="auto").approximate_method == "auto"
    with pytest.raises(ValueError, match="not a registered method"):
        Model(approximate_method="nope")
