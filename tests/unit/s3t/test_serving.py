"""Serving: valid prefixes only, batched multi-adapter inference, and input validation."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from peft.functional import set_adapter

from tests.unit.s3t.conftest import toy_samples
from unlearning.artifacts import LocalArtifactStore
from unlearning.s3t import Backbone, ModelSpec, S3TConfig, S3TEngine, TrainingSample
from unlearning.s3t.backbone import mean_pool
from unlearning.s3t.data import CachedHiddenStates
from unlearning.s3t.training import SequenceTrainer, _load_adapter, _Stack

TEXTS = ["stocks profit bank", "team goal season", "software chip space"]


class RecordingStore(LocalArtifactStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.read: list[str] = []

    def get(self, ref: str) -> bytes:
        self.read.append(ref)
        return super().get(ref)


@pytest.fixture
def trained(
    backbone: Backbone, tmp_path: Path, config: S3TConfig
) -> tuple[S3TEngine, RecordingStore, ModelSpec, dict[tuple[int, int, int], str]]:
    store = RecordingStore(tmp_path / "artifacts")
    engine = S3TEngine(backbone, store)
    spec = ModelSpec.plan(config)
    layers = engine.train(spec, toy_samples(config))
    return engine, store, spec, {(x.shard, x.sequence, x.stage): x.artifact for x in layers}


def test_serving_the_valid_prefix_never_reads_an_invalid_adapter(
    trained: tuple[S3TEngine, RecordingStore, ModelSpec, dict[tuple[int, int, int], str]],
    backbone: Backbone,
) -> None:
    engine, store, spec, artifacts = trained
    deleted_slice = spec.orders[0][0]  # shard 0: sequence 0 dies, the others keep a prefix
    affected = engine.affected_stages(spec, [(0, deleted_slice)])
    invalid = {
        artifacts[(key.shard, key.sequence, stage)]
        for key, first in affected.items()
        for stage in range(first, spec.config.n_slices + 1)
    }
    best = max(affected.items(), key=lambda item: item[1])  # longest valid prefix
    prefixes = {
        0: [artifacts[(0, best[0].sequence, s)] for s in range(1, best[1])],
        1: [artifacts[(1, 0, s)] for s in range(1, spec.config.n_slices + 1)],
    }
    assert prefixes[0], "some sequence of shard 0 must keep a valid prefix"
    fresh = S3TEngine(backbone, store)  # nothing loaded yet
    store.read.clear()
    before = fresh.predict(spec.config, TEXTS, prefixes).outputs
    assert store.read and not set(store.read) & invalid
    for ref in invalid:  # the invalidated weights may even be gone
        (store.root / ref[7:9] / ref[7:]).unlink()
    after = S3TEngine(backbone, store).predict(spec.config, TEXTS, prefixes).outputs
    assert torch.equal(before, after)


def test_batched_ensemble_matches_sequential_passes(
    trained: tuple[S3TEngine, RecordingStore, ModelSpec, dict[tuple[int, int, int], str]],
) -> None:
    engine, _, spec, artifacts = trained
    prefixes = {0: [artifacts[(0, 1, 1)]], 1: [artifacts[(1, 2, s)] for s in (1, 2, 3)]}
    batched = engine.predict(spec.config, TEXTS, prefixes)
    sequential = engine.predict(spec.config, TEXTS, prefixes, batched=False)
    assert batched.shards == (0, 1)
    torch.testing.assert_close(batched.outputs, sequential.outputs, rtol=1e-5, atol=1e-5)
    alone = engine.predict(spec.config, TEXTS, {0: prefixes[0], 1: []})
    assert alone.shards == (0,)  # a dead shard drops out of the mean
    assert not torch.allclose(alone.outputs, batched.outputs)


def test_frozen_rows_answer_what_the_texts_answer_bitwise(
    trained: tuple[S3TEngine, RecordingStore, ModelSpec, dict[tuple[int, int, int], str]],
) -> None:
    """Rows encoded once, their frozen bottom computed once (what measuring a model's
    evaluation split reuses), give every served prefix exactly its predictions: a full prefix,
    a short one whose adapters start higher up, and one shard alone."""
    engine, _, spec, artifacts = trained
    frozen = engine.frozen_rows(spec.config, TEXTS)
    assert frozen.depth < engine.backbone.n_layers
    full = {
        0: [artifacts[(0, 1, s)] for s in (1, 2, 3)],
        1: [artifacts[(1, 2, s)] for s in (1, 2, 3)],
    }
    for prefixes in (full, {0: full[0][:1], 1: full[1][:2]}, {0: full[0][:1], 1: []}):
        expected = engine.predict(spec.config, TEXTS, prefixes)
        reused = engine.predict_frozen(spec.config, frozen, prefixes)
        assert reused.shards == expected.shards
        assert torch.equal(reused.outputs, expected.outputs)


def test_hooked_adapters_compute_what_peft_computes(
    trained: tuple[S3TEngine, RecordingStore, ModelSpec, dict[tuple[int, int, int], str]],
    backbone: Backbone,
) -> None:
    engine, _, spec, artifacts = trained
    refs = [artifacts[(1, 1, s)] for s in (1, 2)]
    served = engine.predict(spec.config, TEXTS, {1: refs}).outputs

    stack = _Stack(copy.deepcopy(backbone.layers))
    trainer = SequenceTrainer(backbone, spec.config)
    for stage, ref in enumerate(refs, start=1):
        weights = engine.load_stage(ref)
        trainer._inject(stack, f"stage{stage}", weights.layers)
        _load_adapter(stack, f"stage{stage}", weights)
    set_adapter(stack, ["stage1", "stage2"], inference_mode=True)
    encoded = backbone.encode(TEXTS, spec.config.max_length)
    with torch.no_grad():
        hidden = backbone.run(
            backbone.embed(encoded), encoded.attention_mask, 0, backbone.n_layers, stack.layers
        )
        pooled = mean_pool(hidden, encoded.attention_mask)
    head = engine.load_stage(refs[-1])
    expected = pooled @ head.head_weight.T + head.head_bias
    torch.testing.assert_close(served, expected, rtol=1e-5, atol=1e-5)


def test_frozen_bottom_cache_does_not_change_what_is_learned(
    backbone: Backbone, tmp_path: Path, config: S3TConfig
) -> None:
    spec = ModelSpec.plan(dataclasses.replace(config, n_shards=1, budget=1))
    samples = toy_samples(spec.config, count=24)
    runs = []
    for cache in (True, False):
        engine = S3TEngine(
            backbone, LocalArtifactStore(tmp_path / str(cache)), cache_hidden_states=cache
        )
        layers = engine.train(spec, samples)
        runs.append(engine.predict(spec.config, TEXTS, {0: [x.artifact for x in layers]}).outputs)
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-4, atol=1e-4)


def _sample(i: int, shard: int = 0, slice_: int = 0, target: float = 0.0) -> TrainingSample:
    return TrainingSample(f"x{i}", shard, slice_, "some text", target)


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        ([_sample(1, shard=2)], "outside this model"),
        ([_sample(1, slice_=3)], "outside this model"),
        ([_sample(1), _sample(1)], "duplicate sample id"),
        ([_sample(1, target=3.0)], "label 3.0 is not in 0..2"),
        ([_sample(1, target=0.5)], "label 0.5"),
    ],
)
def test_bad_training_input_is_refused(
    engine: S3TEngine, config: S3TConfig, samples: list[TrainingSample], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        engine.train(ModelSpec.plan(config), samples)


def test_bad_retrain_and_predict_requests_are_refused(engine: S3TEngine, config: S3TConfig) -> None:
    spec = ModelSpec.plan(config)
    key = engine.affected_stages(spec, [(0, 0)])
    first_key = next(iter(key))
    with pytest.raises(ValueError, match="k-1 saved stages"):
        engine.retrain(spec, first_key, 2, [_sample(1)], prefix=[])
    with pytest.raises(ValueError, match="another shard"):
        engine.retrain(spec, first_key, 1, [_sample(1, shard=1)], prefix=[])
    with pytest.raises(ValueError, match="no shard 5"):
        engine.affected_stages(spec, [(5, 0)])
    with pytest.raises(ValueError, match="no live shard"):
        engine.predict(config, TEXTS, {0: [], 1: []})
    with pytest.raises(ValueError, match="not a permutation"):
        ModelSpec(config, ((0, 1, 1),))


def test_cache_keeps_the_named_depths_it_passes(backbone: Backbone, config: S3TConfig) -> None:
    encoded = backbone.encode(TEXTS * 30, config.max_length)  # more rows than one chunk
    rows = torch.arange(len(encoded))
    planned = CachedHiddenStates(backbone, encoded, depths={0, 1, 2, 3})
    top = planned.at(3, rows)
    assert set(planned._states) == {0, 1, 2, 3}
    for depth in (0, 1, 2, 3):
        alone = CachedHiddenStates(backbone, encoded).at(depth, rows)
        assert torch.equal(planned.at(depth, rows), alone)
    torch.testing.assert_close(top, backbone.hidden_at(encoded, 3), rtol=1e-5, atol=1e-5)


def test_a_shard_without_samples_trains_and_serves(engine: S3TEngine, config: S3TConfig) -> None:
    """Subject-aware placement can leave a shard empty: it still trains (its stages keep their
    initial weights) and serves, and the text encoder takes an empty batch."""
    spec = ModelSpec.plan(dataclasses.replace(config, n_shards=3))
    samples = [s for s in toy_samples(spec.config) if s.shard != 2]
    layers = engine.train(spec, samples)
    assert {layer.shard for layer in layers} == {0, 1, 2}
    assert all(layer.sample_count == 0 for layer in layers if layer.shard == 2)
    prefixes = {2: [x.artifact for x in layers if (x.shard, x.sequence) == (2, 0)]}
    assert engine.predict(spec.config, TEXTS, prefixes).outputs.shape == (len(TEXTS), 3)
    assert len(engine.backbone.encode([], spec.config.max_length)) == 0


def test_evicted_stages_leave_memory_and_load_again_from_the_store(
    trained: tuple[S3TEngine, RecordingStore, ModelSpec, dict[tuple[int, int, int], str]],
) -> None:
    engine, store, _, artifacts = trained
    refs = sorted(set(artifacts.values()))[:3]
    for ref in refs:
        engine.load_stage(ref)
    assert set(refs) <= set(engine.loaded_stages)
    assert engine.evict_stages([refs[0], refs[1], "sha256:" + "0" * 64]) == 2
    assert set(engine.loaded_stages) & set(refs) == {refs[2]}
    store.read.clear()
    engine.load_stage(refs[0])
    assert store.read == [refs[0]]
