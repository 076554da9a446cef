"""Exact unlearning: train, delete from slice π_k, retrain == train without those samples.

Everything runs on CPU with the engine's deterministic seeds, so equality is bitwise: the same
artifact reference (SHA-256 of the safetensors bytes) and identical predictions.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.unit.s3t.conftest import regression, toy_samples
from unlearning.artifacts import LocalArtifactStore
from unlearning.s3t import (
    Backbone,
    ModelSpec,
    S3TConfig,
    S3TEngine,
    SequenceKey,
    TrainedLayer,
    TrainingSample,
)
from unlearning.s3t.baselines import sisa_config
from unlearning.s3t.weights import StageWeights

TEXTS = ["stocks profit bank", "team goal season", "software chip space", "market trade cup"]


def _index(layers: list[TrainedLayer]) -> dict[tuple[int, int, int], str]:
    return {(layer.shard, layer.sequence, layer.stage): layer.artifact for layer in layers}


def _delete_from_position(
    spec: ModelSpec, samples: list[TrainingSample], shard: int, sequence: int, position: int
) -> tuple[list[TrainingSample], list[TrainingSample]]:
    """Two samples of the slice at ``position`` (1-based) of one sequence of one shard."""
    slice_ = spec.orders[sequence][position - 1]
    hit = [s for s in samples if (s.shard, s.slice) == (shard, slice_)][:2]
    assert hit, "the toy data must have samples in every slice"
    return hit, [s for s in samples if s not in hit]


def _unlearn(
    engine: S3TEngine,
    spec: ModelSpec,
    trained: dict[tuple[int, int, int], str],
    deleted: list[TrainingSample],
    remaining: list[TrainingSample],
) -> dict[tuple[int, int, int], str]:
    """What the service does: find the first invalid stage per sequence and retrain from it."""
    after = dict(trained)
    affected = engine.affected_stages(spec, [(s.shard, s.slice) for s in deleted])
    for key, first in affected.items():
        prefix = [trained[(key.shard, key.sequence, stage)] for stage in range(1, first)]
        shard_samples = [s for s in remaining if s.shard == key.shard]
        for layer in engine.retrain(spec, key, first, shard_samples, prefix):
            after[(layer.shard, layer.sequence, layer.stage)] = layer.artifact
    return after


def _serve(
    engine: S3TEngine, spec: ModelSpec, artifacts: dict[tuple[int, int, int], str]
) -> torch.Tensor:
    prefixes = {
        shard: [artifacts[(shard, 0, stage)] for stage in range(1, spec.config.n_slices + 1)]
        for shard in range(spec.config.n_shards)
    }
    return engine.predict(spec.config, TEXTS, prefixes).outputs


@pytest.mark.parametrize(
    ("schedule", "position", "lora_dropout"),
    [("s3t", 1, 0.0), ("s3t", 2, 0.0), ("s3t", 3, 0.1), ("sisa", 2, 0.0)],
)
def test_retrain_is_bitwise_equal_to_training_without_the_samples(
    backbone: Backbone,
    tmp_path: object,
    config: S3TConfig,
    schedule: str,
    position: int,
    lora_dropout: float,
) -> None:
    config = dataclasses.replace(config, lora_dropout=lora_dropout)
    base = config if schedule == "s3t" else sisa_config(config)
    spec = ModelSpec.plan(base)
    engine = S3TEngine(backbone, LocalArtifactStore(f"{tmp_path}/a"))
    samples = toy_samples(base)
    trained = _index(engine.train(spec, samples))
    deleted, remaining = _delete_from_position(spec, samples, 0, 0, position)

    retrained = _unlearn(engine, spec, trained, deleted, remaining)
    fresh = _index(S3TEngine(backbone, LocalArtifactStore(f"{tmp_path}/b")).train(spec, remaining))

    assert retrained == fresh
    changed = {key for key in trained if trained[key] != retrained[key]}
    assert (0, 0, position) in changed  # the deletion did change the model
    for shard, sequence, stage in changed:
        assert shard == 0
        first = spec.orders[sequence].index(deleted[0].slice) + 1
        assert stage >= first
        ours = engine.load_stage(retrained[(shard, sequence, stage)])
        theirs = StageWeights.from_bytes(
            LocalArtifactStore(f"{tmp_path}/b").get(fresh[(shard, sequence, stage)])
        )
        assert all(torch.equal(ours.adapters[k].a, theirs.adapters[k].a) for k in ours.adapters)
        assert all(torch.equal(ours.adapters[k].b, theirs.adapters[k].b) for k in ours.adapters)
        assert torch.equal(ours.head_weight, theirs.head_weight)
    assert torch.equal(_serve(engine, spec, retrained), _serve(engine, spec, fresh))
    assert not torch.equal(_serve(engine, spec, retrained), _serve(engine, spec, trained))


def test_deletion_leaves_earlier_stages_and_other_shards_untouched(
    engine: S3TEngine, config: S3TConfig
) -> None:
    spec = ModelSpec.plan(config)
    samples = toy_samples(config)
    trained = _index(engine.train(spec, samples))
    deleted, remaining = _delete_from_position(spec, samples, 1, 2, 3)

    affected = engine.affected_stages(spec, [(s.shard, s.slice) for s in deleted])
    assert affected == {
        SequenceKey(1, sequence): order.index(deleted[0].slice) + 1
        for sequence, order in enumerate(spec.orders)
    }
    assert affected[SequenceKey(1, 2)] == 3
    after = _unlearn(engine, spec, trained, deleted, remaining)
    for (shard, sequence, stage), ref in trained.items():
        first = affected.get(SequenceKey(shard, sequence), config.n_slices + 1)
        if stage < first:
            assert after[(shard, sequence, stage)] == ref  # same bytes
        else:
            assert after[(shard, sequence, stage)] != ref


def test_regression_task_is_exact_too(
    backbone: Backbone, tmp_path: object, config: S3TConfig
) -> None:
    base = dataclasses.replace(regression(config), n_shards=1, budget=2)
    spec = ModelSpec.plan(base)
    engine = S3TEngine(backbone, LocalArtifactStore(f"{tmp_path}/a"))
    samples = toy_samples(base, count=30)
    trained = _index(engine.train(spec, samples))
    deleted, remaining = _delete_from_position(spec, samples, 0, 1, 2)
    fresh = _index(S3TEngine(backbone, LocalArtifactStore(f"{tmp_path}/b")).train(spec, remaining))
    assert _unlearn(engine, spec, trained, deleted, remaining) == fresh
    outputs = engine.predict(base, TEXTS, {0: [fresh[(0, 0, 1)]]}).outputs
    assert outputs.shape == (len(TEXTS),)


def test_training_is_deterministic_and_seeded_by_the_model_seed(
    backbone: Backbone, tmp_path: object, config: S3TConfig
) -> None:
    spec = ModelSpec.plan(dataclasses.replace(config, n_shards=1))
    samples = toy_samples(spec.config, count=24)
    first = _index(S3TEngine(backbone, LocalArtifactStore(f"{tmp_path}/a")).train(spec, samples))
    again = _index(
        S3TEngine(backbone, LocalArtifactStore(f"{tmp_path}/b")).train(spec, samples[::-1])
    )
    assert first == again
    other = ModelSpec(dataclasses.replace(spec.config, seed=8), spec.orders)
    reseeded = _index(
        S3TEngine(backbone, LocalArtifactStore(f"{tmp_path}/c")).train(other, samples)
    )
    assert set(reseeded.values()).isdisjoint(first.values())
