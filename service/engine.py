"""The bridge between the service and the S3T engine: the engine a process uses, built from the
settings (device, backbone, artifact store), and the engine's view of what the lineage database
stores (a model's settings, a sample's text and target)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from service.db.models import Model, Sample, SamplePayload, Task
from service.errors import LineageError
from service.settings import Settings
from unlearning.artifacts import LocalArtifactStore
from unlearning.device import resolve_device
from unlearning.s3t import ModelSpec, S3TConfig, S3TEngine, TrainingSample, load_backbone


def artifacts_dir(settings: Settings) -> Path:
    assert settings.artifacts_dir is not None  # filled by the settings validator
    return settings.artifacts_dir


def build_engine(settings: Settings) -> S3TEngine:
    """Starts CUDA when ``UNLEARN_DEVICE`` picks a GPU: call it in the process that computes
    (a pool child after its fork), never in one that forks later."""
    backbone = load_backbone(settings.backbone_path, resolve_device(settings.device))
    return S3TEngine(backbone, LocalArtifactStore(artifacts_dir(settings)))


def model_spec(model: Model, orders: Sequence[Sequence[int]]) -> ModelSpec:
    """The engine's view of a model: its stored S3T settings plus the lineage's own fields."""
    n_labels = len(model.labels or []) if model.task is Task.classification else 1
    config = S3TConfig.from_dict(
        {
            **model.config,
            "n_shards": model.n_shards,
            "n_slices": model.n_slices,
            "budget": model.budget,
            "task": model.task.value,
            "n_labels": n_labels,
        }
    )
    return ModelSpec(config, tuple(tuple(order) for order in orders))


def training_sample(
    model: Model, sample: Sample, payload: SamplePayload, shard: int, slice_: int
) -> TrainingSample:
    """The engine's view of a stored sample: its text and its class index or value."""
    if payload.text is None:
        raise LineageError(f"sample {sample.id} has no text; the S3T engine trains on text")
    target = payload.label_index if model.task is Task.classification else payload.target
    if target is None:
        raise LineageError(f"sample {sample.id} has no label")
    return TrainingSample(sample.external_id, shard, slice_, payload.text, target)
