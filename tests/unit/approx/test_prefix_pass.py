"""The service's entry point to the approximate methods: one pass over a served prefix."""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest
import torch

from service.db.models import ApproximateMethod
from service.models.schemas import MethodName
from tests.tiny_models import TINY_SETTINGS, tiny_backbone
from unlearning.approx import UnlearningInputError
from unlearning.approx.prefix_pass import Method, approximate_stages, examples_of, unfit
from unlearning.artifacts import LocalArtifactStore
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


@pytest.mark.parametrize("method", list(Method))
def test_a_pass_returns_the_edited_stages_only(
    prefix: list[StageWeights], regression_prefix: list[StageWeights], method: Method
) -> None:
    """Every method runs by name: on the classification prefix, or on the regression one
    when it is made for regression."""
    backbone = tiny_backbone(4)
    fits = unfit(method, Task.CLASSIFICATION) is None
    config, samples = (CONFIG, SAMPLES) if fits else (REGRESSION, REGRESSION_SAMPLES)
    prefix = prefix if fits else regression_prefix
    forget = samples[:4]
    if method is Method.concept_poisoning:  # class unlearning: the forget set is one class
        forget = [s for s in samples if s.target == 0][:4]
    if method in (Method.suppress_class, Method.refit_head):  # the whole class leaves
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
            backbone, CONFIG, prefix, 0, examples_of(backbone, CONFIG, []), retain, Method.ssd
        )
    with pytest.raises(UnlearningInputError, match="no stage 2"):
        approximate_stages(backbone, CONFIG, prefix, 2, forget, retain, Method.ssd)
    with pytest.raises(UnlearningInputError, match="classification"):
        approximate_stages(backbone, REGRESSION, prefix, 1, forget, retain, Method.random_labels)
    with pytest.raises(UnlearningInputError, match="regression"):
        approximate_stages(backbone, CONFIG, prefix, 1, forget, retain, Method.blindspot)
    unlabelled = examples_of(backbone, CONFIG, FORGET)
    unlabelled = dataclasses.replace(unlabelled, targets=None)
    with pytest.raises(UnlearningInputError, match="no labels"):
        approximate_stages(backbone, CONFIG, prefix, 1, unlabelled, retain, Method.ssd)
    assert approximate_stages(backbone, CONFIG, prefix, 1, unlabelled, retain, Method.laf)


def test_the_service_offers_exactly_the_library_methods_and_auto() -> None:
    assert [m.value for m in ApproximateMethod] == [*(m.value for m in Method), "auto"]
    assert sorted(get_args(MethodName)) == sorted(m.value for m in ApproximateMethod)  # OpenAPI
