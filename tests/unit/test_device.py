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
from unlearning.precision import PrecisionError, check_precision, int8_available

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


@pytest.mark.parametrize(
    "profile",
    [
        "cpu-torch2.13.0",
        "cuda-sm90-torch2.11.0",
        "cpu-torch2.13",
        "cuda-sm90-torch2.11.0-bf16",
        "cuda-sm80-torch2.11.0-fp16",
        "cuda-sm90-torch2.11.0-int8",
        "cpu-torch2.13.0-bf16",
    ],
)
def test_profiles(profile: str) -> None:
    assert check_profile(profile) == profile


@pytest.mark.parametrize(
    "profile",
    [
        "cpu",
        "cuda-torch2.11.0",
        "gpu-torch2.1.0",
        "cpu-2.13.0",
        "cpu-torch2.13.0-fp32",  # float32 is the bare profile, so one precision has one name
        "cuda-sm90-torch2.11.0-bf8",
        "cuda-sm90-torch2.11.0-bf16-bf16",
    ],
)
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


@pytest.mark.parametrize(
    ("precision", "suffix"),
    [("float32", ""), ("bfloat16", "-bf16"), ("float16", "-fp16")],
)
def test_a_profile_names_the_base_precision(precision: str, suffix: str) -> None:
    expected = f"cpu-torch{torch_version()}{suffix}"
    assert profile_of(torch.device("cpu"), precision) == expected
    assert check_profile(local_profile("cpu", precision)) == expected


def test_float32_profiles_are_the_ones_stored_before_precisions() -> None:
    assert profile_of(torch.device("cpu")) == profile_of(torch.device("cpu"), "float32")
    assert local_profile("cpu") == f"cpu-torch{torch_version()}"


@pytest.mark.parametrize("name", ["fp32", "bf16", "int4", "", "FLOAT32"])
def test_unknown_precisions_name_the_choices(name: str) -> None:
    with pytest.raises(PrecisionError, match="'float32', 'bfloat16', 'float16', 'int8'"):
        check_precision(name)
    with pytest.raises(DeviceError, match="precision must be one of"):
        local_profile("cpu", name)


@pytest.mark.skipif(int8_available(), reason="checks the refusal where bitsandbytes is absent")
def test_int8_is_refused_without_bitsandbytes_never_replaced() -> None:
    with pytest.raises(DeviceError, match="'int8' needs bitsandbytes"):
        local_profile("cpu", "int8")
