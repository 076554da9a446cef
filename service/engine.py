"""The bridge between the service and the S3T engine: the engine a process uses, built from the
settings (device, backbone, artifact store: :func:`artifact_store`), and the engine's view of
what the lineage database stores (a model's settings, a sample's text and target)."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from service.db.models import Model, Sample, SamplePayload, Task
from service.errors import LineageError
from service.settings import Settings
from unlearning.artifacts import ArtifactStore, LocalArtifactStore
from unlearning.device import resolve_device
from unlearning.object_store import S3ArtifactStore
from unlearning.s3t import ModelSpec, S3TConfig, S3TEngine, TrainingSample, load_backbone

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def artifacts_dir(settings: Settings) -> Path:
    assert settings.artifacts_dir is not None  # filled by the settings validator
    return settings.artifacts_dir


def artifact_store(settings: Settings) -> ArtifactStore:
    """The store every process of a deployment shares: the object store ``artifacts_url``
    names, or else the local folder (one machine only)."""
    if settings.artifacts_url:
        return _object_store(
            os.getpid(),
            settings.artifacts_url,
            settings.s3_endpoint_url,
            settings.s3_region,
            settings.s3_max_attempts,
        )
    return LocalArtifactStore(artifacts_dir(settings))


@functools.cache
def _object_store(
    _pid: int, url: str, endpoint_url: str, region: str, max_attempts: int
) -> S3ArtifactStore:
    """One client per process and configuration (building one takes about 0.1 s of CPU, and
    housekeeping asks every round); keyed by the process id, so that a forked child never shares
    its parent's connections."""
    return S3ArtifactStore.from_url(
        url, endpoint_url=endpoint_url or None, region=region, max_attempts=max_attempts
    )


def s3_client(settings: Settings) -> S3Client:
    """A client of the deployment's S3-compatible server (``s3_endpoint_url``, ``s3_region``;
    credentials from boto3's chain), for the base models stored there."""
    return _object_store(
        os.getpid(),
        "s3://base-models",
        settings.s3_endpoint_url,
        settings.s3_region,
        settings.s3_max_attempts,
    ).client


def build_engine(settings: Settings) -> S3TEngine:
    """Starts CUDA when ``UNLEARN_DEVICE`` picks a GPU: call it in the process that computes
    (a pool child after its fork), never in one that forks later."""
    backbone = load_backbone(settings.backbone_path, resolve_device(settings.device))
    return S3TEngine(backbone, artifact_store(settings))


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
    """The engine's view of a stored sample: its text or encoded image, and its class index or
    value."""
    content = payload.image if payload.image is not None else payload.text
    if content is None:
        raise LineageError(f"sample {sample.id} has no text or image; the S3T engine needs one")
    target = payload.label_index if model.task is Task.classification else payload.target
    if target is None:
        raise LineageError(f"sample {sample.id} has no label")
    return TrainingSample(sample.external_id, shard, slice_, content, target)
