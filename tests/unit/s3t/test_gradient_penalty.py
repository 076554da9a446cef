"""IAU's gradient-norm penalty as a training option: it changes training, deterministically,
and exact retraining still holds with it."""

from __future__ import annotations

import dataclasses

import pytest

from tests.unit.s3t.conftest import toy_samples
from unlearning.s3t import ModelSpec, S3TConfig, S3TEngine, SequenceKey


def test_the_penalty_changes_training_and_is_deterministic(
    engine: S3TEngine, config: S3TConfig
) -> None:
    plain = ModelSpec.plan(dataclasses.replace(config, n_shards=1))
    penalised = ModelSpec.plan(dataclasses.replace(config, n_shards=1, gradient_penalty=0.005))
    samples = toy_samples(plain.config, 24)
    without = [layer.artifact for layer in engine.train(plain, samples)]
    once = [layer.artifact for layer in engine.train(penalised, samples)]
    again = [layer.artifact for layer in engine.train(penalised, samples)]
    assert once == again and once != without


def test_retraining_with_the_penalty_is_exact(engine: S3TEngine, config: S3TConfig) -> None:
    spec = ModelSpec.plan(dataclasses.replace(config, n_shards=1, gradient_penalty=0.005))
    samples = toy_samples(spec.config, 24)
    order = spec.orders[0]
    gone = [s for s in samples if s.slice == order[1]][:1]
    rest = [s for s in samples if s not in gone]
    trained = {(t.sequence, t.stage): t.artifact for t in engine.train(spec, samples)}
    retrained = engine.retrain(spec, SequenceKey(0, 0), 2, rest, [trained[(0, 1)]])
    reference = {(t.sequence, t.stage): t.artifact for t in engine.train(spec, rest)}
    assert [t.artifact for t in retrained] == [reference[(0, s)] for s in range(2, 4)]


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_the_penalty_is_validated(config: S3TConfig, value: float) -> None:
    with pytest.raises(ValueError, match="gradient_penalty"):
        dataclasses.replace(config, gradient_penalty=value)
