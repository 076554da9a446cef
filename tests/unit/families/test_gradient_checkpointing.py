"""Gradient checkpointing recomputes the trained blocks in backward and trains the same bytes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.unit.families.test_family_exactness import family_config, samples_for
from unlearning.artifacts import LocalArtifactStore
from unlearning.s3t import Backbone, ModelSpec, S3TEngine


def _train(backbone: Backbone, folder: Path, **changes: Any) -> tuple[list[str], int]:
    """The artifacts of one training, and how often the top block started a forward pass."""
    config = replace(family_config(backbone), **changes)
    calls = []
    # (A pre-hook: recomputation stops once it has what backward needs, before forward hooks.)
    # Hooks travel with the trainer's private copy of the layers (a deep copy of the module).
    handle = backbone.layers[-1].register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        layers = S3TEngine(backbone, LocalArtifactStore(folder)).train(
            ModelSpec.plan(config), samples_for(backbone, config)
        )
    finally:
        handle.remove()
    return [layer.artifact for layer in layers], len(calls)


@pytest.mark.parametrize(
    ("family", "changes"),
    [("llama", {"lora_dropout": 0.1}), ("gpt2", {}), ("bert", {"gradient_penalty": 0.005})],
)
def test_checkpointing_trains_bitwise_the_same_stages(
    backbones: dict[str, Backbone], tmp_path: Path, family: str, changes: dict[str, Any]
) -> None:
    backbone = backbones[family]
    plain, plain_calls = _train(backbone, tmp_path / "plain", **changes)
    checkpointed, calls = _train(
        backbone, tmp_path / "checkpointed", gradient_checkpointing=True, **changes
    )
    assert checkpointed == plain  # the same artifact hashes (LoRA dropout replayed alike)
    assert calls > plain_calls  # the top block did run again in backward
