"""Tiny random-weight BERT models and toy data for fast S3T tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.tiny_models import TINY_SETTINGS, tiny_backbone
from unlearning.artifacts import LocalArtifactStore
from unlearning.s3t import Backbone, S3TConfig, S3TEngine, Task, TrainingSample
from unlearning.sharding import assign

WORDS = {
    0: ["stocks", "market", "profit", "bank", "shares", "trade"],
    1: ["match", "goal", "team", "season", "coach", "cup"],
    2: ["chip", "software", "space", "laptop", "research", "internet"],
}


@pytest.fixture(scope="session")
def backbone() -> Backbone:
    return tiny_backbone(4)


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def engine(backbone: Backbone, store: LocalArtifactStore) -> S3TEngine:
    return S3TEngine(backbone, store)


TINY = S3TConfig(n_shards=2, n_slices=3, budget=3, n_labels=3, **TINY_SETTINGS)  # type: ignore[arg-type]


@pytest.fixture
def config() -> S3TConfig:
    return TINY


def toy_samples(config: S3TConfig, count: int = 60, model_key: str = "toy") -> list[TrainingSample]:
    """Labelled three-topic sentences, placed by the service's own sharding function."""
    samples = []
    for i in range(count):
        label = i % 3
        words = WORDS[label]
        text = f"{words[i % 6]} {words[(i * 5) % 6]} news item {i}"
        shard, slice_ = assign(model_key, f"s{i:04d}", config.n_shards, config.n_slices)
        target = float(label) if config.task == "classification" else float(label) / 2
        samples.append(TrainingSample(f"s{i:04d}", shard, slice_, text, target))
    return samples


def regression(config: S3TConfig) -> S3TConfig:
    return dataclasses.replace(config, task=Task.REGRESSION, n_labels=1)
