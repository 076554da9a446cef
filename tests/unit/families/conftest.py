"""Tiny random-weight models of every family, saved once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from unlearning.families.testing import (
    DECODER_FAMILIES,
    IMAGE_FAMILIES,
    TEXT_FAMILIES,
    save_tiny_model,
)
from unlearning.s3t import Backbone, load_backbone

#: The encoder families (classification and regression heads on pooled states).
ALL_FAMILIES = TEXT_FAMILIES + IMAGE_FAMILIES


@pytest.fixture(scope="session")
def family_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {
        family: save_tiny_model(family, root / family) for family in ALL_FAMILIES + DECODER_FAMILIES
    }


@pytest.fixture(scope="session")
def backbones(family_folders: dict[str, Path]) -> dict[str, Backbone]:
    return {family: load_backbone(folder) for family, folder in family_folders.items()}
