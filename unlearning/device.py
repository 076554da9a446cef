"""Which device the library computes on, the compute profile it belongs to, and determinism.

Exactness is bitwise per *compute profile*: the kind of device (the CPU, or a CUDA GPU of one
compute capability), the torch version, and the precision of the base model's weights
(:mod:`unlearning.precision`; float32 adds nothing to the name, ``-bf16``, ``-fp16`` and
``-int8`` the others). CPU and CUDA results differ in the last bits, and so may two torch
releases or two precisions; within one profile, with deterministic algorithms and a fixed cuBLAS
workspace, training is a function of its inputs. A model is therefore trained, retrained and
edited on one profile only.

CUDA must not be started in a process that later forks workers (a forked child cannot use it),
so :func:`local_profile` asks about a GPU in a short child process when ``spec`` may mean one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from functools import cache

import torch

from unlearning.precision import SUFFIX, Precision, check_precision, require_usable

#: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
DEVICE_SPEC = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
#: What a profile looks like: ``cpu-torch2.13.0``, ``cuda-sm90-torch2.11.0`` (float32), or with
#: the base's precision after it, ``cuda-sm90-torch2.11.0-bf16``.
PROFILE_PATTERN = r"^(cpu|cuda-sm\d+)-torch\d+\.\d+(\.\d+)?(-(bf16|fp16|int8))?$"
PROFILE = re.compile(PROFILE_PATTERN)
#: The cuBLAS workspace CUDA needs for reproducible matrix products (set before CUDA starts).
CUBLAS_WORKSPACE = ":4096:8"


class DeviceError(ValueError):
    """A device that cannot be used: a malformed spec, or CUDA asked for where there is none."""


def check_spec(spec: str) -> str:
    """``spec`` if it is a device spec, else a :class:`DeviceError` naming the choices."""
    if not DEVICE_SPEC.match(spec):
        raise DeviceError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {spec!r}")
    return spec


def resolve_device(spec: str = "auto") -> torch.device:
    """The device ``spec`` names: ``auto`` is the first CUDA GPU when there is one, else the CPU.
    Starts CUDA in this process when it picks a GPU."""
    check_spec(spec)
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {spec!r} asked for, but CUDA is not available here")
    device = torch.device("cuda:0" if spec in ("auto", "cuda") else spec)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"no {device}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def torch_version() -> str:
    """torch's public version, without a build tag (``2.13.0+cpu`` is ``2.13.0``)."""
    return torch.__version__.split("+", 1)[0]


def profile_of(device: torch.device, precision: Precision | str = Precision.FLOAT32) -> str:
    """The compute profile of ``device`` with this torch and a base in ``precision``:
    ``cpu-torch2.13.0``, ``cuda-sm90-torch2.11.0``, ``cuda-sm90-torch2.11.0-bf16``."""
    if device.type == "cpu":
        kind = "cpu"
    elif device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        kind = f"cuda-sm{major}{minor}"
    else:
        raise DeviceError(f"no compute profile for a {device.type} device")
    return f"{kind}-torch{torch_version()}{SUFFIX[check_precision(precision)]}"


def check_profile(profile: str) -> str:
    if not PROFILE.match(profile):
        raise DeviceError(
            "a compute profile looks like 'cpu-torch2.13.0', 'cuda-sm90-torch2.11.0' or "
            f"'cuda-sm90-torch2.11.0-bf16', got {profile!r}"
        )
    return profile


@cache
def local_profile(spec: str = "auto", precision: str = Precision.FLOAT32) -> str:
    """The profile this machine computes ``spec`` on with a base in ``precision``, without
    starting CUDA in this process; a :class:`DeviceError` where that precision cannot run
    (int8 without bitsandbytes, or off CUDA)."""
    check_spec(spec)
    try:
        check_precision(precision)
        if spec == "cpu" or (spec == "auto" and torch.version.cuda is None):  # a CPU-only build
            return profile_of(torch.device("cpu"), require_usable(precision, "cpu"))
        if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            device = resolve_device(spec)
            return profile_of(device, require_usable(precision, device))
    except ValueError as error:  # a PrecisionError
        raise DeviceError(str(error)) from error
    probe = (
        "import sys; from unlearning.device import profile_of, resolve_device; "
        "from unlearning.precision import require_usable; device = resolve_device(sys.argv[1]); "
        "print(profile_of(device, require_usable(sys.argv[2], device)))"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-c", probe, spec, str(precision)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no output"]
        raise DeviceError(f"cannot use device {spec!r}: {lines[-1]}")
    return check_profile(result.stdout.strip())


def make_deterministic() -> None:
    """Reproducible kernels on every device: deterministic algorithms, no cuDNN autotuning, and
    the fixed cuBLAS workspace (which only takes effect if set before CUDA starts, so call this
    first thing in a worker process, before any tensor reaches a GPU)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def runtime_info(
    device: torch.device, precision: Precision | str = Precision.FLOAT32
) -> dict[str, str | int | None]:
    """What a benchmark names next to its figures: the device, its profile, the libraries."""
    import peft
    import transformers

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "device": str(device),
        "compute_profile": profile_of(device, precision),
        "precision": str(check_precision(precision)),
        "gpu": gpu,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
