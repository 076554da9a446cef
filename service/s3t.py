"""The S3T engine a process uses, built from the settings (backbone and artifact store)."""

from __future__ import annotations

from service.settings import Settings
from unlearning.artifacts import LocalArtifactStore
from unlearning.s3t import S3TEngine, load_backbone


def build_engine(settings: Settings) -> S3TEngine:
    assert settings.artifacts_dir is not None  # filled by the settings validator
    return S3TEngine(
        load_backbone(settings.backbone_path), LocalArtifactStore(settings.artifacts_dir)
    )
