"""Which device the library computes on, the compute profile it belongs to, and determinism.

Exactness is bitwise per *compute profile*: the kind of device (the CPU, or a CUDA GPU of one
compute capability) and the torch version. CPU and CUDA results differ in the last bits, and so
may two torch releases; within one profile, with deterministic algorithms and a fixed cuBLAS
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

#: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
DEVICE_SPEC = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
#: What a profile looks like: ``cpu-torch2.13.0`` or ``cuda-sm90-torch2.11.0``.
PROFILE = re.compile(r"^(cpu|cuda-sm\d+)-torch\d+\.\d+(\.\d+)?$")
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


def profile_of(device: torch.device) -> str:
    """The compute profile of ``device`` with this torch: ``cpu-torch2.13.0``,
    ``cuda-sm90-torch2.11.0``."""
    if device.type == "cpu":
        kind = "cpu"
    elif device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        kind = f"cuda-sm{major}{minor}"
    else:
        raise DeviceError(f"no compute profile for a {device.type} device")
    return f"{kind}-torch{torch_version()}"


def check_profile(profile: str) -> str:
    if not PROFILE.match(profile):
        raise DeviceError(
            f"a compute profile looks like 'cpu-torch2.13.0' or 'cuda-sm90-torch2.11.0', "
            f"got {profile!r}"
        )
    return profile


@cache
def local_profile(spec: str = "auto") -> str:
    """The profile this machine computes ``spec`` on, without starting CUDA in this process."""
    check_spec(spec)
    if spec == "cpu" or (spec == "auto" and torch.version.cuda is None):  # a CPU-only build
        return profile_of(torch.device("cpu"))
    if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        return profile_of(resolve_device(spec))
    probe = (
        "import sys; from unlearning.device import profile_of, resolve_device; "
        "print(profile_of(resolve_device(sys.argv[1])))"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-c", probe, spec],
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


def runtime_info(device: torch.device) -> dict[str, str | int | None]:
    """What a benchmark names next to its figures: the device, its profile, the libraries."""
    import peft
    import transformers

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "device": str(device),
        "compute_profile": profile_of(device),
        "gpu": gpu,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
