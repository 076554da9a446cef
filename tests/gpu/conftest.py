"""CUDA tests (`pytest -m gpu`, `make test-gpu`): skipped with a reason where CUDA is absent.

Deterministic algorithms and the cuBLAS workspace are set here, at collection, before any test
starts CUDA, as a worker sets them before its first job.
"""

from __future__ import annotations

import pytest
import torch

from unlearning.device import make_deterministic

make_deterministic()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="needs a CUDA GPU (CI has none; run `make test-gpu` on one)")
    for item in items:
        if "tests/gpu/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.gpu)
            if not torch.cuda.is_available():
                item.add_marker(skip)
