"""Which modules of a block LoRA adapts, and the key each adapter is stored under.

A target module is matched by the last component of its path, as peft matches them. The key is
that last component (``query``, ``q_proj``), or, where two modules of a block share it (GPT-2's
attention and MLP ``c_proj``), the shortest dotted end of the path that tells them apart
(``attn.c_proj``, ``mlp.c_proj``). So keys of architectures without such a clash are unchanged.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from torch import nn
from transformers.pytorch_utils import Conv1D

#: Module types LoRA adapts here: linear layers, and GPT-2's transposed ``Conv1D``.
ADAPTABLE = (nn.Linear, Conv1D)


def adapter_keys(paths: Iterable[str]) -> dict[str, str]:
    """Each path's key: the shortest dotted end of it that no other path of ``paths`` ends with."""
    listed = list(paths)
    keys = {}
    for path in listed:
        parts = path.split(".")
        for size in range(1, len(parts) + 1):
            key = ".".join(parts[-size:])
            if not any(o != path and (o == key or o.endswith("." + key)) for o in listed):
                break
        keys[path] = key
    return keys


def block_targets(block: nn.Module, targets: Collection[str]) -> dict[str, nn.Module]:
    """The block's adapted modules by adapter key."""
    found = {
        path: module
        for path, module in block.named_modules()
        if path.rsplit(".", 1)[-1] in targets and isinstance(module, ADAPTABLE)
    }
    keys = adapter_keys(found)
    return {keys[path]: module for path, module in found.items()}


def stack_targets(
    layers: Iterable[nn.Module], targets: Collection[str]
) -> dict[tuple[int, str], nn.Module]:
    """Every block's adapted modules by (layer index, adapter key)."""
    return {
        (index, key): module
        for index, layer in enumerate(layers)
        for key, module in block_targets(layer, targets).items()
    }
