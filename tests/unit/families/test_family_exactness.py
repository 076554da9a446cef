"""Per family: delete -> retrain is bitwise equal to a fresh training without the samples, and
the retrained model serves (the S3T guarantee holds whatever the architecture)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.tiny_models import TINY_SETTINGS
from tests.unit.families.conftest import ALL_FAMILIES
from tests.unit.s3t.test_exactness import _delete_from_position, _index, _unlearn
from unlearning.artifacts import LocalArtifactStore
from unlearning.families import Conversation, Modality
from unlearning.families.testing import DECODER_FAMILIES, digit_images
from unlearning.s3t import Backbone, ModelSpec, S3TConfig, S3TEngine, Task, TrainingSample
from unlearning.sharding import assign

WORDS = {
    0: ["stocks", "market", "profit", "bank"],
    1: ["match", "goal", "team", "season"],
    2: ["chip", "software", "space", "laptop"],
}


def samples_for(backbone: Backbone, config: S3TConfig, count: int = 36) -> list[TrainingSample]:
    images = digit_images(count) if backbone.modality == Modality.IMAGE else []
    samples = []
    for i in range(count):
        shard, slice_ = assign("families", f"s{i:03d}", config.n_shards, config.n_slices)
        if backbone.causal:
            label = i % 3
            words = WORDS[label]
            pair = Conversation.pair(f"tell me about {words[i % 4]}", f"{words[(i * 3) % 4]} {i}")
            samples.append(TrainingSample(f"s{i:03d}", shard, slice_, pair))
            continue
        if images:
            content: str | bytes = images[i][0]
            label = images[i][1] % config.n_labels
        else:
            label = i % 3
            content = f"{WORDS[label][i % 4]} {WORDS[label][(i * 3) % 4]} item {i}"
        samples.append(TrainingSample(f"s{i:03d}", shard, slice_, content, float(label)))
    return samples


def family_config(backbone: Backbone) -> S3TConfig:
    """Two shards, two slices, two orders, LoRA on the family's default targets."""
    causal = backbone.causal
    return S3TConfig(
        n_shards=2,
        n_slices=2,
        budget=2,
        task=Task.CAUSAL_LM if causal else Task.CLASSIFICATION,
        n_labels=1 if causal else 3,
        target_modules=backbone.family.default_targets,
        # A decoder's instruction template takes a dozen tokens before the response starts.
        **{**TINY_SETTINGS, "max_length": 32 if causal else 16},  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class Unlearned:
    """A tiny S3T model trained, a deletion from stage 1 retrained, and a fresh training
    without the deleted samples on an engine (store) of its own."""

    config: S3TConfig
    trained: dict[tuple[int, int, int], str]
    retrained: dict[tuple[int, int, int], str]
    fresh: dict[tuple[int, int, int], str]
    engine: S3TEngine
    fresh_engine: S3TEngine


def train_delete_retrain(backbone: Backbone, folder: Path) -> Unlearned:
    config = family_config(backbone)
    spec = ModelSpec.plan(config)
    engine = S3TEngine(backbone, LocalArtifactStore(folder / "a"))
    samples = samples_for(backbone, config)
    trained = _index(engine.train(spec, samples))
    deleted, remaining = _delete_from_position(spec, samples, 0, 0, 1)
    retrained = _unlearn(engine, spec, trained, deleted, remaining)
    fresh_engine = S3TEngine(backbone, LocalArtifactStore(folder / "b"))
    fresh = _index(fresh_engine.train(spec, remaining))
    return Unlearned(config, trained, retrained, fresh, engine, fresh_engine)


def probe(backbone: Backbone) -> list[str | bytes]:
    if backbone.modality == Modality.IMAGE:
        return [image for image, _ in digit_images(40)[-4:]]
    return ["stocks profit bank", "team goal season", "software chip space"]


def outputs(engine: S3TEngine, config: S3TConfig, served: dict[int, list[str]]) -> torch.Tensor:
    """Predictions, or a causal LM's log-probabilities of responses."""
    backbone = engine.backbone
    if not backbone.causal:
        return engine.predict(config, probe(backbone), served).outputs
    prompts = [Conversation.prompt(f"tell me about {w}") for w in ("stocks", "team", "chip")]
    scored = engine.lm(config, served).score(prompts, ["profit 3", "goal 4", "space 5"])
    return torch.tensor([x for s in scored for x in s.logprobs])


@pytest.mark.parametrize("family", ALL_FAMILIES + DECODER_FAMILIES)
def test_retrain_is_bitwise_equal_to_training_without_the_samples(
    backbones: dict[str, Backbone], tmp_path: Path, family: str
) -> None:
    backbone = backbones[family]
    run = train_delete_retrain(backbone, tmp_path)
    config, trained, retrained, fresh = run.config, run.trained, run.retrained, run.fresh
    engine, fresh_engine = run.engine, run.fresh_engine

    assert retrained == fresh  # the same artifact hashes: bitwise equal weights and heads
    assert retrained[(0, 0, 1)] != trained[(0, 0, 1)]  # the deletion did change the model
    served = {shard: [retrained[(shard, 0, s)] for s in (1, 2)] for shard in (0, 1)}
    before = {shard: [trained[(shard, 0, s)] for s in (1, 2)] for shard in (0, 1)}
    after = outputs(engine, config, served)
    assert torch.equal(after, outputs(fresh_engine, config, served))
    assert not torch.equal(after, outputs(engine, config, before))
