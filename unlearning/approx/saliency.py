"""Weight-saliency masks and the two methods built on them: SalUn and RBM.

SalUn (Fan et al., ICLR 2024; rule from the official code, OPTML-Group/Unlearn-Saliency): the
saliency of a weight is ``|sum over batches of the gradient of the batch-mean task loss on the
forget set|``, ranked globally over every trainable tensor; the top ``share`` (0.5 in the README)
is updated, the rest is frozen. The unlearning step is random-label training: the forget set
relabelled (here once, with a label never equal to the true one, as
:func:`~unlearning.approx.baselines.random_labels` does; the official code draws labels afresh
that may coincide) joined with the retain set, with masked gradients and the frozen entries
re-imposed after every step. Adam replaces the official SGD with momentum, as in the baselines.

RBM, Retention-Based Masking (Ding et al., TMLR 2025). Only the abstract was read: the mask is
built from the *retain* set's gradients. Everything else is INFERRED (see the research notes,
section 1) and therefore an option of :class:`RBMConfig`:

* the direction (``select``): by default the ``share`` of weights with the *smallest* retain
  saliency are edited and the rest (what the retain set relies on) is frozen;
* the variant: ``"masked_finetune"`` (A) fine-tunes only the selected weights;
  ``"reset_then_finetune"`` (B) first zeroes them (``theta = (1 - m) * theta_o``, which for LoRA
  moves towards the base model that never saw the forget set), then fine-tunes them likewise;
* the loss (``loss``): the retain set only, or SalUn's random labels on the forget set plus the
  retain set.

In every variant the weights outside the mask stay byte-identical.

Here the parameters are the editable stages' LoRA matrices and the head (the parameters of a
:class:`PrefixModel` that require gradients).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn

from unlearning.approx.baselines import TrainConfig
from unlearning.approx.data import Examples, UnlearningInputError, task_loss
from unlearning.approx.model import PrefixModel
from unlearning.approx.registry import ALL_TASKS, PassData, method
from unlearning.s3t.config import Task

Mask = dict[str, torch.Tensor]
RBMVariant = Literal["masked_finetune", "reset_then_finetune"]
RBMSelect = Literal["smallest", "largest"]
RBMLoss = Literal["retain", "random_labels"]


def _check_share(share: float) -> None:
    if not 0 < share <= 1:
        raise ValueError("`share` must be in (0, 1]")


def _check_choice(name: str, value: str, allowed: object) -> None:
    options = get_args(allowed)
    if value not in options:
        raise ValueError(f"`{name}` must be one of {', '.join(options)}")


@dataclass(frozen=True)
class SalUnConfig:
    share: float = 0.5  # fraction of weights updated (the largest forget saliency)
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        _check_share(self.share)
        _ = self.training  # validates epochs, lr, batch_size

    @property
    def training(self) -> TrainConfig:
        return TrainConfig(self.epochs, self.lr, self.batch_size, self.seed)


@dataclass(frozen=True)
class RBMConfig:
    variant: RBMVariant = "reset_then_finetune"
    share: float = 0.5  # fraction of weights edited
    select: RBMSelect = "smallest"  # which retain saliency is edited [INFERRED]
    loss: RBMLoss = "retain"
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        _check_share(self.share)
        _check_choice("variant", self.variant, RBMVariant)
        _check_choice("select", self.select, RBMSelect)
        _check_choice("loss", self.loss, RBMLoss)
        _ = self.training

    @property
    def training(self) -> TrainConfig:
        return TrainConfig(self.epochs, self.lr, self.batch_size, self.seed)


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def saliency(model: PrefixModel, examples: Examples, batch_size: int = 32) -> Mask:
    """``|sum over batches of the gradient of the batch-mean task loss|`` per trainable
    parameter, at the model's current weights."""
    examples.labelled("saliency")
    params = _trainable(model)
    sums = {name: torch.zeros_like(p) for name, p in params.items()}
    model.eval()
    for batch in examples.batches(batch_size):
        assert batch.targets is not None
        model.zero_grad(set_to_none=True)
        task_loss(model(batch.encoded), batch.targets).backward()  # type: ignore[no-untyped-call]
        for name, p in params.items():
            if p.grad is not None:
                sums[name] += p.grad.detach()
    model.zero_grad(set_to_none=True)
    return {name: total.abs() for name, total in sums.items()}


def top_mask(scores: Mapping[str, torch.Tensor], share: float, *, largest: bool = True) -> Mask:
    """0/1 masks marking exactly ``round(share * n)`` of the ``n`` coordinates, ranked globally:
    the largest scores (or the smallest); ties go to the earlier coordinate (in ``scores``'
    order, then row-major)."""
    _check_share(share)
    flat = torch.cat([s.detach().flatten() for s in scores.values()])
    count = round(share * flat.numel())
    order = torch.sort(flat, descending=largest, stable=True).indices
    chosen = torch.zeros_like(flat)
    chosen[order[:count]] = 1
    parts = torch.split(chosen, [s.numel() for s in scores.values()])
    return {name: part.view_as(s) for (name, s), part in zip(scores.items(), parts, strict=True)}


def gradient_mask(
    model: PrefixModel,
    examples: Examples,
    share: float,
    *,
    largest: bool = True,
    batch_size: int = 32,
) -> Mask:
    """The mask of the ``share`` of trainable weights with the largest (or smallest) absolute
    task-loss gradient on ``examples``."""
    _check_share(share)
    return top_mask(saliency(model, examples, batch_size), share, largest=largest)


def _restore(
    params: Mapping[str, nn.Parameter],
    keep: Mapping[str, torch.Tensor],
    frozen: Mapping[str, torch.Tensor],
) -> None:
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(torch.where(keep[name], frozen[name], p))


def _masked_step(
    model: PrefixModel,
    batch: Examples,
    mask: Mapping[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
) -> None:
    assert batch.targets is not None
    optimizer.zero_grad(set_to_none=True)
    task_loss(model(batch.encoded), batch.targets).backward()  # type: ignore[no-untyped-call]
    for name, p in _trainable(model).items():
        if p.grad is not None:
            p.grad.mul_(mask[name])
    optimizer.step()


def masked_finetune(
    model: PrefixModel, examples: Examples, mask: Mapping[str, torch.Tensor], config: TrainConfig
) -> None:
    """Train on ``examples`` updating only the coordinates where ``mask`` is 1; the others are
    re-copied after every step, so they end byte-identical."""
    params = _trainable(model)
    if set(mask) != set(params):
        raise ValueError("the mask must cover exactly the model's trainable parameters")
    keep = {name: mask[name] == 0 for name in params}
    frozen = {name: p.detach().clone() for name, p in params.items()}
    optimizer = torch.optim.Adam(list(params.values()), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    for _ in range(config.epochs):
        for batch in examples.batches(config.batch_size, generator):
            _masked_step(model, batch, mask, optimizer)
            _restore(params, keep, frozen)
    model.eval()


def reset_masked(model: PrefixModel, mask: Mapping[str, torch.Tensor]) -> None:
    """Zero the coordinates where ``mask`` is 1 (RBM variant B's removal step)."""
    with torch.no_grad():
        for name, p in _trainable(model).items():
            p.mul_(1 - mask[name])


def _relabelled(forget: Examples, retain: Examples, n_labels: int | None, seed: int) -> Examples:
    """The forget set with a label other than the true one, as the RL baseline draws it."""
    labels = forget.labelled("forget")
    if labels.is_floating_point() or not retain.classification or not n_labels or n_labels < 2:
        raise UnlearningInputError("random labels need a classification model")
    generator = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, n_labels, labels.shape, generator=generator).to(labels.device)
    return Examples(forget.encoded, (labels + shift) % n_labels)


def salun(
    model: PrefixModel,
    forget: Examples,
    retain: Examples,
    n_labels: int,
    config: SalUnConfig | None = None,
) -> Mask:
    """SalUn, in place: mask the largest forget-set saliency, then random-label training on
    the forget set plus the retain set through the mask. Classification only. Returns the
    mask."""
    config = config or SalUnConfig()
    retain.labelled("retain")
    relabelled = _relabelled(forget, retain, n_labels, config.seed)
    mask = gradient_mask(model, forget, config.share, batch_size=config.batch_size)
    masked_finetune(model, Examples.join(relabelled, retain), mask, config.training)
    return mask


def _rbm_data(
    forget: Examples, retain: Examples, config: RBMConfig, n_labels: int | None
) -> Examples:
    if len(forget) == 0:
        raise UnlearningInputError("the forget set is empty")
    retain.labelled("retain")
    if config.loss == "retain":
        return retain
    return Examples.join(_relabelled(forget, retain, n_labels, config.seed), retain)


def rbm(
    model: PrefixModel,
    forget: Examples,
    retain: Examples,
    config: RBMConfig | None = None,
    *,
    n_labels: int | None = None,
) -> Mask:
    """RBM, in place: mask by retain-set saliency, (variant B: zero the masked weights,) then
    fine-tune through the mask on the retain set (with ``loss="random_labels"``: plus the forget
    set relabelled, which needs ``n_labels``). Returns the mask."""
    config = config or RBMConfig()
    data = _rbm_data(forget, retain, config, n_labels)
    largest = config.select == "largest"
    mask = gradient_mask(model, retain, config.share, largest=largest, batch_size=config.batch_size)
    if config.variant == "reset_then_finetune":
        reset_masked(model, mask)
    masked_finetune(model, data, mask, config.training)
    return mask


@method(
    "salun",
    config=SalUnConfig,
    tasks={Task.CLASSIFICATION},
    description="mask of the 50 % weights with the largest forget-gradient; RL trains only "
    "those (Fan et al.)",
)
def run_salun(model: PrefixModel, data: PassData, config: SalUnConfig) -> Mask:
    return salun(model, data.forget, data.retain_set(), data.n_labels, config)


@method(
    "rbm",
    config=RBMConfig,
    tasks=ALL_TASKS,
    description="mask from the *retain* set's gradients (smallest 50 %), reset them, FT on "
    "retain; the rule is inferred, variants are `RBMConfig` options",
)
def run_rbm(model: PrefixModel, data: PassData, config: RBMConfig) -> Mask:
    n_labels = data.n_labels if data.forget.classification else None
    return rbm(model, data.forget, data.retain_set(), config, n_labels=n_labels)
