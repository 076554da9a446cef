"""IAU's training-time gradient restriction (Liu et al., 2025), shared by training and unlearning.

The official code adds ``alpha`` times the sum of the per-tensor L2 norms of the batch loss's
gradient (not one global norm) to the loss, with double backpropagation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def gradient_norm_penalty(
    loss: torch.Tensor, params: Sequence[torch.Tensor], alpha: float
) -> torch.Tensor:
    """``loss + alpha * sum of the per-tensor L2 norms of d loss / d params``."""
    grads = torch.autograd.grad(loss, list(params), create_graph=True, allow_unused=True)
    norm = sum(
        (g.norm() for g in grads if g is not None),
        torch.zeros((), dtype=loss.dtype, device=loss.device),
    )
    return loss + alpha * norm
