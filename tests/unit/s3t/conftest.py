"""Tiny random-weight BERT models and toy data for fast S3T tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from unlearning.artifacts import LocalArtifactStore
from unlearning.s3t import (
    Backbone,
    S3TConfig,
    S3TEngine,
    Task,
    TrainingSample,
    default_backbone_path,
)
from unlearning.sharding import assign

WORDS = {
    0: ["stocks", "market", "profit", "bank", "shares", "trade"],
    1: ["match", "goal", "team", "season", "coach", "cup"],
    2: ["chip", "software", "space", "laptop", "research", "internet"],
}


@pytest.fixture(scope="session")
def tokenizer() -> object:
    return AutoTokenizer.from_pretrained(default_backbone_path())


@pytest.fixture(scope="session")
def make_backbone(tokenizer: object) -> Callable[[int], Backbone]:
    def make(n_layers: int = 4) -> Backbone:
        torch.manual_seed(1234)
        config = BertConfig(
            vocab_size=30522,
            hidden_size=32,
            num_hidden_layers=n_layers,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=32,
        )
        return Backbone(BertModel(config, add_pooling_layer=False), tokenizer)

    return make


@pytest.fixture(scope="session")
def backbone(make_backbone: Callable[[int], Backbone]) -> Backbone:
    return make_backbone(4)


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def engine(backbone: Backbone, store: LocalArtifactStore) -> S3TEngine:
    return S3TEngine(backbone, store)


TINY = S3TConfig(
    n_shards=2,
    n_slices=3,
    budget=3,
    n_labels=3,
    lora_rank=4,
    epochs_per_stage=2,
    batch_size=4,
    max_length=16,
    learning_rate=5e-3,
    seed=7,
)


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
