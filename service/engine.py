"""The S3T engine a process uses, built from the settings (device, backbone, artifact store)."""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings
from unlearning.artifacts import LocalArtifactStore
from unlearning.device import resolve_device
from unlearning.s3t import S3TEngine, load_backbone


def artifacts_dir(settings: Settings) -> Path:
    assert settings.artifacts_dir is not None  # filled by the settings validator
    return settings.artifacts_dir


def build_engine(settings: Settings) -> S3TEngine:
    """Starts CUDA when ``UNLEARN_DEVICE`` picks a GPU: call it in the process that computes
    (a pool child after its fork), never in one that forks later."""
    backbone = load_backbone(settings.backbone_path, resolve_device(settings.device))
    return S3TEngine(backbone, LocalArtifactStore(artifacts_dir(settings)))
