"""Decoder families (causal LM) on a CUDA GPU: delete -> retrain is bitwise equal to a fresh
training without the samples with the base in bfloat16 (every decoder family) and in float32
(Llama), as on the CPU (tests/unit/families/test_precision.py); gradient checkpointing trains
the same bytes; and a bf16 base on the GPU serves what it serves on the CPU within bf16's
rounding."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.unit.families.test_family_exactness import (
    family_config,
    outputs,
    samples_for,
    train_delete_retrain,
)
from unlearning.artifacts import LocalArtifactStore
from unlearning.families import Conversation
from unlearning.families.testing import DECODER_FAMILIES, save_tiny_model
from unlearning.s3t import ModelSpec, S3TEngine, load_backbone

CASES = [(family, "bfloat16") for family in DECODER_FAMILIES] + [("llama", "float32")]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("decoders")
    return {family: save_tiny_model(family, root / family) for family in DECODER_FAMILIES}


@pytest.mark.parametrize(("family", "precision"), CASES)
def test_a_decoder_retrains_bitwise_exactly_on_cuda(
    folders: dict[str, Path], tmp_path: Path, family: str, precision: str
) -> None:
    backbone = load_backbone(folders[family], "cuda", precision)
    assert backbone.compute_profile.startswith("cuda-sm")
    assert backbone.compute_profile.endswith("-bf16") == (precision == "bfloat16")
    run = train_delete_retrain(backbone, tmp_path)
    assert run.retrained == run.fresh
    assert run.retrained[(0, 0, 1)] != run.trained[(0, 0, 1)]
    served = {shard: [run.retrained[(shard, 0, s)] for s in (1, 2)] for shard in (0, 1)}
    assert torch.equal(
        outputs(run.engine, run.config, served), outputs(run.fresh_engine, run.config, served)
    )
    generated = run.engine.generate(
        run.config, served, Conversation.prompt("tell me about bank"), max_new_tokens=4
    )
    assert 1 <= len(generated.token_ids) <= 4


def test_checkpointing_trains_the_same_bytes_on_cuda(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    backbone = load_backbone(folders["llama"], "cuda", "bfloat16")
    config = replace(family_config(backbone), lora_dropout=0.1)
    data = samples_for(backbone, config)
    artifacts = []
    for checkpointing in (False, True):
        spec = ModelSpec.plan(replace(config, gradient_checkpointing=checkpointing))
        engine = S3TEngine(backbone, LocalArtifactStore(tmp_path / str(checkpointing)))
        artifacts.append([layer.artifact for layer in engine.train(spec, data)])
    assert artifacts[0] == artifacts[1]


def test_a_bf16_base_on_cuda_serves_what_it_serves_on_the_cpu(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    gpu = load_backbone(folders["llama"], "cuda", "bfloat16")
    run = train_delete_retrain(gpu, tmp_path)
    served = {shard: [run.retrained[(shard, 0, s)] for s in (1, 2)] for shard in (0, 1)}
    cpu = S3TEngine(load_backbone(folders["llama"], "cpu", "bfloat16"), run.engine.store)
    on_gpu = outputs(run.engine, run.config, served).cpu()
    on_cpu = outputs(cpu, run.config, served)
    assert torch.allclose(on_gpu, on_cpu, atol=0.15), (on_gpu - on_cpu).abs().max()
