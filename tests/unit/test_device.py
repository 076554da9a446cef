"""Device specs, compute profiles and determinism, on the CPU (CUDA: tests/gpu)."""

from __future__ import annotations

import os

import pytest
import torch

from unlearning.device import (
    DeviceError,
    check_profile,
    check_spec,
    local_profile,
    make_deterministic,
    profile_of,
    resolve_device,
    torch_version,
)

CUDA = torch.cuda.is_available()


@pytest.mark.parametrize("spec", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_specs(spec: str) -> None:
    assert check_spec(spec) == spec


@pytest.mark.parametrize("spec", ["", "gpu", "CUDA", "cuda:", "cuda:x", "mps", "cpu:0"])
def test_bad_device_specs_name_the_choices(spec: str) -> None:
    with pytest.raises(DeviceError, match="'auto', 'cpu', 'cuda' or 'cuda:N'"):
        check_spec(spec)


def test_cpu_profile_names_the_torch_release() -> None:
    assert torch_version() == torch.__version__.split("+")[0]
    assert profile_of(torch.device("cpu")) == f"cpu-torch{torch_version()}"
    assert check_profile(local_profile("cpu")) == f"cpu-torch{torch_version()}"
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("profile", ["cpu-torch2.13.0", "cuda-sm90-torch2.11.0", "cpu-torch2.13"])
def test_profiles(profile: str) -> None:
    assert check_profile(profile) == profile


@pytest.mark.parametrize("profile", ["cpu", "cuda-torch2.11.0", "gpu-torch2.1.0", "cpu-2.13.0"])
def test_bad_profiles(profile: str) -> None:
    with pytest.raises(DeviceError, match="compute profile"):
        check_profile(profile)


@pytest.mark.skipif(CUDA, reason="checks the refusal where CUDA is absent")
def test_auto_is_the_cpu_and_cuda_is_refused_without_a_gpu() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert local_profile("auto") == local_profile("cpu")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda:0")
    # Asked in a child process, so that this one never starts CUDA; its error comes back.
    local_profile.cache_clear()
    with pytest.raises(DeviceError, match="cannot use device 'cuda'"):
        local_profile("cuda")
    assert not torch.cuda.is_initialized()  # type: ignore[no-untyped-call]


def test_make_deterministic_sets_the_cublas_workspace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    was = torch.are_deterministic_algorithms_enabled()
    try:
        make_deterministic()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(was)
