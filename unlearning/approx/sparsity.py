"""Model sparsity for unlearning (Jia et al., NeurIPS 2023, "Model Sparsity Can Simplify Machine
Unlearning"): l1-sparse unlearning and "prune first, then unlearn".

l1-sparse MU (:func:`l1_sparse`), as in the official ``unlearn/FT.py`` (``FT_l1``): fine-tune on
the retain set with the task loss plus ``gamma_t * ||theta||_1``, where ``||theta||_1`` is the
plain sum of absolute values of every trainable parameter (here the editable stages' LoRA
matrices and the head, bias included) and ``gamma_t`` decays linearly per epoch
(:func:`l1_weight`). The optimiser is Adam, as in :mod:`baselines`, so that with ``alpha = 0`` the
pass is exactly :func:`baselines.finetune` (the paper's code uses SGD, momentum 0.9).

Prune first (:func:`prune_then_unlearn`): the paper's OMP prunes the trained model by *global*
unstructured L1 magnitude over its convolution weights (not the linear classifier), then
unlearns on the sparse model with the pruned weights held at zero. Here the prefix is already
trained, so the pruning is one-shot at unlearning time (no rewind and sparse retraining; the
unlearning fine-tune on the retain set doubles as the sparse model's recovery), over the LoRA
matrices (the head stays dense unless asked, like the paper's classifier), and the unlearner is
:func:`l1_sparse` (``alpha = 0`` makes it plain fine-tuning). Masks can also be computed once
(:func:`magnitude_masks`) and passed in.

Neither method reads the forget set: both only train on the retain set, so they take none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from unlearning.approx.data import Examples, task_loss
from unlearning.approx.model import PrefixModel
from unlearning.approx.registry import ALL_TASKS, PassData, method

__all__ = [
    "L1SparseConfig",
    "PruneConfig",
    "PruneThenUnlearnConfig",
    "l1_norm",
    "l1_sparse",
    "l1_weight",
    "magnitude_masks",
    "prune_then_unlearn",
]

Masks = dict[str, torch.Tensor]


@dataclass(frozen=True)
class L1SparseConfig:
    epochs: int = 10  # the README's `--unlearn_epochs 10`
    lr: float = 1e-3  # Adam, as the baselines
    batch_size: int = 32
    seed: int = 0
    alpha: float = 1e-4  # initial l1 weight; the paper's own value was not found
    no_l1_epochs: int = 0  # final epochs without the penalty

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError("`epochs` must be at least 1")
        if not self.lr > 0:
            raise ValueError("`lr` must be positive")
        if self.batch_size < 1:
            raise ValueError("`batch_size` must be at least 1")
        if not self.alpha >= 0:
            raise ValueError("`alpha` must be non-negative")
        if not 0 <= self.no_l1_epochs <= self.epochs:
            raise ValueError("`no_l1_epochs` must be between 0 and `epochs`")


@dataclass(frozen=True)
class PruneConfig:
    sparsity: float = 0.95  # OMP's `--rate` default, the paper's "95%-sparse" model
    include_head: bool = False  # the paper prunes no linear classifier

    def __post_init__(self) -> None:
        if not 0 <= self.sparsity < 1:
            raise ValueError("`sparsity` must be in [0, 1)")


@dataclass(frozen=True)
class PruneThenUnlearnConfig:
    """:func:`prune_then_unlearn`'s two configs in one, for a pass run by name: the pruning
    (``sparsity``, ``include_head``) and the l1-sparse unlearning (the other settings)."""

    sparsity: float = 0.95
    include_head: bool = False
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    alpha: float = 1e-4
    no_l1_epochs: int = 0

    def __post_init__(self) -> None:
        _ = self.prune, self.l1  # validates both

    @property
    def prune(self) -> PruneConfig:
        return PruneConfig(self.sparsity, self.include_head)

    @property
    def l1(self) -> L1SparseConfig:
        return L1SparseConfig(
            self.epochs, self.lr, self.batch_size, self.seed, self.alpha, self.no_l1_epochs
        )


def l1_weight(epoch: int, config: L1SparseConfig) -> float:
    """``gamma_t`` for 0-based ``epoch``, as the official code: ``alpha * (1 - t / (E - n))``
    while ``t < E - n`` (``n``: ``no_l1_epochs``), ``alpha`` throughout when ``E == n``, else 0."""
    active = config.epochs - config.no_l1_epochs
    if epoch < active:
        return config.alpha * (1 - epoch / active)
    if active == 0:
        return config.alpha
    return 0.0


def l1_norm(model: PrefixModel) -> torch.Tensor:
    """Sum of absolute values of all trainable parameters (the LoRA matrices and the head)."""
    return torch.stack([p.abs().sum() for p in _trainable(model).values()]).sum()


def l1_sparse(model: PrefixModel, retain: Examples, config: L1SparseConfig | None = None) -> None:
    """l1-sparse MU: fine-tune, in place, on the retain set with a decaying l1 penalty."""
    retain.labelled("retain")
    _fit(model, retain, config or L1SparseConfig(), {})


def magnitude_masks(model: PrefixModel, sparsity: float, *, include_head: bool = False) -> Masks:
    """0/1 masks, keyed by parameter name, zeroing the ``round(sparsity * n)`` entries of least
    magnitude among the ``n`` entries of the LoRA matrices (and the head, if asked), ranked
    globally across tensors. Ties go to the entry first in (name, flat index) order."""
    PruneConfig(sparsity)  # validates
    params = {
        name: p
        for name, p in sorted(_trainable(model).items())
        if include_head or not name.startswith("head.")
    }
    if not params:
        return {}
    flat = torch.cat([p.detach().abs().flatten() for p in params.values()])
    keep = torch.ones_like(flat)
    order = torch.sort(flat, stable=True).indices
    keep[order[: round(sparsity * flat.numel())]] = 0
    masks, start = {}, 0
    for name, p in params.items():
        masks[name] = keep[start : start + p.numel()].view_as(p).clone()
        start += p.numel()
    return masks


def prune_then_unlearn(
    model: PrefixModel,
    retain: Examples,
    prune: PruneConfig | None = None,
    l1: L1SparseConfig | None = None,
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
) -> Masks:
    """Prune, in place, by global magnitude (or with the given ``masks``), then unlearn with
    :func:`l1_sparse` on the retain set; pruned entries stay exactly 0. Returns the masks."""
    retain.labelled("retain")
    if masks is not None and prune is not None:
        raise ValueError("give either `prune` or precomputed `masks`")
    if masks is None:
        config = prune or PruneConfig()
        masks = magnitude_masks(model, config.sparsity, include_head=config.include_head)
    used = _checked(model, masks)
    _apply(model, used)
    _fit(model, retain, l1 or L1SparseConfig(), used)
    return used


def _trainable(model: PrefixModel) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _checked(model: PrefixModel, masks: Mapping[str, torch.Tensor]) -> Masks:
    params = _trainable(model)
    unknown = sorted(set(masks) - set(params))
    if unknown:
        raise ValueError(f"`masks` names no trainable parameter {', '.join(unknown)}")
    for name, mask in masks.items():
        if mask.shape != params[name].shape:
            raise ValueError(f"the mask for {name} has the wrong shape")
    return {name: (mask != 0).to(params[name]) for name, mask in masks.items()}


def _apply(model: PrefixModel, masks: Masks) -> None:
    params = _trainable(model)
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask)


def _fit(model: PrefixModel, retain: Examples, config: L1SparseConfig, masks: Masks) -> None:
    """The training loop of :func:`baselines.finetune` plus the penalty and the masks."""
    generator = torch.Generator().manual_seed(config.seed)
    params = _trainable(model)
    optimizer = torch.optim.Adam(list(params.values()), lr=config.lr)
    model.train()
    for epoch in range(config.epochs):
        weight = l1_weight(epoch, config)
        for batch in retain.batches(config.batch_size, generator):
            assert batch.targets is not None
            optimizer.zero_grad(set_to_none=True)
            loss = task_loss(model(batch.encoded), batch.targets)
            if weight > 0:
                loss = loss + weight * l1_norm(model)
            loss.backward()  # type: ignore[no-untyped-call]
            for name, mask in masks.items():
                grad = params[name].grad
                if grad is not None:
                    grad.mul_(mask)
            optimizer.step()
            _apply(model, masks)
    model.eval()


@method(
    "l1_sparse",
    config=L1SparseConfig,
    tasks=ALL_TASKS,
    description="FT on the retain set with an l1 penalty that decays linearly over 10 epochs "
    "(Jia et al.)",
)
def run_l1_sparse(model: PrefixModel, data: PassData, config: L1SparseConfig) -> None:
    l1_sparse(model, data.retain_set(), config)


@method(
    "prune_then_unlearn",
    config=PruneThenUnlearnConfig,
    tasks=ALL_TASKS,
    description="global magnitude pruning of 95 % of the adapters' weights, then l1-sparse FT "
    "keeping them 0",
)
def run_prune_then_unlearn(
    model: PrefixModel, data: PassData, config: PruneThenUnlearnConfig
) -> Masks:
    return prune_then_unlearn(model, data.retain_set(), config.prune, config.l1)
