"""Every architecture family on a CUDA GPU: delete -> retrain is bitwise equal to a fresh
training without the samples (deterministic algorithms), as on the CPU
(tests/unit/families/test_family_exactness.py); and the blockwise run agrees with the CPU's
within float tolerance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.unit.families.test_family_exactness import probe, train_delete_retrain
from unlearning.families.testing import IMAGE_FAMILIES, TEXT_FAMILIES, save_tiny_model
from unlearning.s3t import load_backbone

FAMILIES = TEXT_FAMILIES + IMAGE_FAMILIES


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {family: save_tiny_model(family, root / family) for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_retrains_bitwise_exactly_on_cuda(
    folders: dict[str, Path], tmp_path: Path, family: str
) -> None:
    run = train_delete_retrain(load_backbone(folders[family], "cuda"), tmp_path)
    assert run.retrained == run.fresh
    assert run.retrained[(0, 0, 1)] != run.trained[(0, 0, 1)]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_runs_on_cuda_as_on_the_cpu(folders: dict[str, Path], family: str) -> None:
    cpu, gpu = load_backbone(folders[family], "cpu"), load_backbone(folders[family], "cuda")
    inputs = probe(cpu)
    on_cpu = cpu.hidden_at(cpu.encode(inputs, 16), cpu.n_layers)
    on_gpu = gpu.hidden_at(gpu.encode(inputs, 16), gpu.n_layers).cpu()
    assert torch.allclose(on_cpu, on_gpu, atol=1e-3)
