"""The real MiniLM-L6 backbone from its PyPI package: loads offline, and unlearning stays exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unlearning.artifacts import LocalArtifactStore
from unlearning.s3t import ModelSpec, S3TConfig, S3TEngine, TrainingSample, load_backbone
from unlearning.s3t.blocks import block_layers

pytestmark = pytest.mark.slow

TEXTS = [
    ("Stocks rallied as the central bank held rates", 0),
    ("Oil prices climb on supply worries", 0),
    ("The striker scored twice in the cup final", 1),
    ("Coach praises defence after narrow win", 1),
    ("New chip doubles laptop battery life", 2),
    ("Researchers release open source browser engine", 2),
]


def test_minilm_trains_and_unlearns_exactly(tmp_path: Path) -> None:
    backbone = load_backbone()
    assert (backbone.n_layers, backbone.hidden_size) == (6, 384)
    assert block_layers(backbone.n_layers, 3, 1) == (4, 5)
    config = S3TConfig(
        n_shards=1,
        n_slices=3,
        budget=2,
        n_labels=3,
        epochs_per_stage=1,
        batch_size=4,
        max_length=16,
    )
    spec = ModelSpec.plan(config)
    samples = [
        TrainingSample(f"id{i:02d}", 0, i % 3, f"{text} ({i})", label)
        for i, (text, label) in enumerate(TEXTS * 3)
    ]
    engine = S3TEngine(backbone, LocalArtifactStore(tmp_path / "a"))
    trained = {(x.sequence, x.stage): x.artifact for x in engine.train(spec, samples)}
    victim = next(s for s in samples if s.slice == spec.orders[0][1])  # stage 2 of sequence 0
    remaining = [s for s in samples if s is not victim]
    retrained = dict(trained)
    for key, first in engine.affected_stages(spec, [(0, victim.slice)]).items():
        prefix = [trained[(key.sequence, s)] for s in range(1, first)]
        for layer in engine.retrain(spec, key, first, remaining, prefix):
            retrained[(layer.sequence, layer.stage)] = layer.artifact
    fresh_engine = S3TEngine(backbone, LocalArtifactStore(tmp_path / "b"))
    fresh = {(x.sequence, x.stage): x.artifact for x in fresh_engine.train(spec, remaining)}
    assert retrained == fresh
    assert retrained[(0, 1)] == trained[(0, 1)]
    served = [retrained[(0, s)] for s in (1, 2, 3)]
    ours = engine.predict(config, ["Shares fall after earnings miss"], {0: served})
    theirs = fresh_engine.predict(config, ["Shares fall after earnings miss"], {0: served})
    assert torch.equal(ours.outputs, theirs.outputs)
