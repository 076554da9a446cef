"""The precision a frozen base model's weights are held in, and what each one needs.

``float32`` (the default) is how every base model was loaded before precisions existed.
``bfloat16`` and ``float16`` hold the base weights (and the activations that flow through them)
in half precision: half the memory of a 7B base, and the GPU's fast matrix units. ``int8`` loads
the base's linear layers quantised to 8 bits by bitsandbytes (LLM.int8, as the S3T paper loads
Llama), on CUDA only, and only where bitsandbytes is installed: asked for anywhere else, it is
refused, never quietly replaced by another precision. Whatever the base's precision, the LoRA
adapters, the task head and the optimiser state stay float32.

The precision changes every result in its last bits, so it is part of the compute profile
(:func:`unlearning.device.profile_of`): a model is trained and retrained in one precision only.
"""

from __future__ import annotations

import importlib.util
from enum import StrEnum

import torch


class Precision(StrEnum):
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"
    INT8 = "int8"


#: What a profile appends for each precision (float32 appends nothing: profiles written before
#: precisions existed keep meaning float32).
SUFFIX = {
    Precision.FLOAT32: "",
    Precision.BFLOAT16: "-bf16",
    Precision.FLOAT16: "-fp16",
    Precision.INT8: "-int8",
}


class PrecisionError(ValueError):
    """A precision that does not exist, or cannot be used here."""


def check_precision(name: str) -> Precision:
    """``name`` as a :class:`Precision`, else a :class:`PrecisionError` naming the choices."""
    try:
        return Precision(name)
    except ValueError:
        choices = ", ".join(repr(p.value) for p in Precision)
        raise PrecisionError(f"precision must be one of {choices}, got {name!r}") from None


def weight_dtype(precision: Precision | str) -> torch.dtype:
    """The dtype of the base's weights (an int8 base keeps its other weights in float16)."""
    return {
        Precision.FLOAT32: torch.float32,
        Precision.BFLOAT16: torch.bfloat16,
        Precision.FLOAT16: torch.float16,
        Precision.INT8: torch.float16,
    }[check_precision(precision)]


def int8_available() -> bool:
    """Whether bitsandbytes can be imported (it is no dependency of the project)."""
    return importlib.util.find_spec("bitsandbytes") is not None


def require_usable(precision: Precision | str, device: torch.device | str) -> Precision:
    """``precision`` if a base can be loaded in it on ``device``; else a :class:`PrecisionError`
    that says why (int8 without bitsandbytes, or off CUDA)."""
    checked = check_precision(precision)
    if checked != Precision.INT8:
        return checked
    if not int8_available():
        raise PrecisionError(
            "precision 'int8' needs bitsandbytes, which is not installed here (`pip install "
            "bitsandbytes` on a CUDA machine); choose 'bfloat16', 'float16' or 'float32'"
        )
    if torch.device(device).type != "cuda":
        raise PrecisionError(f"precision 'int8' runs on CUDA only, not on {torch.device(device)}")
    return checked


__all__ = [
    "SUFFIX",
    "Precision",
    "PrecisionError",
    "check_precision",
    "int8_available",
    "require_usable",
    "weight_dtype",
]
