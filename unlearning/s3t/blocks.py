"""Which transformer layers a stage adapts.

Layers are grouped into ``L`` blocks of ``n = floor(n_layers / L)`` consecutive layers counted
from the top: block 1 is the top ``n`` layers. Leftover bottom layers get no adapter.
"""

from __future__ import annotations

from unlearning.s3t.config import Schedule


def layers_per_block(n_layers: int, n_slices: int) -> int:
    n = n_layers // n_slices
    if n < 1:
        raise ValueError(f"a backbone of {n_layers} layers cannot hold {n_slices} blocks")
    return n


def block_layers(n_layers: int, n_slices: int, block: int) -> tuple[int, ...]:
    """Layer indices (ascending, 0 = bottom) of ``block`` (1 = top)."""
    if not 1 <= block <= n_slices:
        raise ValueError(f"block must be in 1..{n_slices}, got {block}")
    n = layers_per_block(n_layers, n_slices)
    top = n_layers - (block - 1) * n
    return tuple(range(top - n, top))


def adapted_layers(n_layers: int, n_slices: int) -> tuple[int, ...]:
    """Every layer that some block covers."""
    n = layers_per_block(n_layers, n_slices)
    return tuple(range(n_layers - n * n_slices, n_layers))


def stage_layers(schedule: Schedule, n_layers: int, n_slices: int, stage: int) -> tuple[int, ...]:
    """The layers whose adapters ``stage`` trains."""
    if schedule == Schedule.SISA:
        if not 1 <= stage <= n_slices:
            raise ValueError(f"stage must be in 1..{n_slices}, got {stage}")
        return adapted_layers(n_layers, n_slices)
    return block_layers(n_layers, n_slices, stage)


def stage_depths(schedule: Schedule, n_layers: int, n_slices: int) -> set[int]:
    """The lowest layer each stage runs: where its cached frozen-bottom states enter."""
    return {
        min(stage_layers(schedule, n_layers, n_slices, stage)) for stage in range(1, n_slices + 1)
    }
