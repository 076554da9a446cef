"""Deep regression unlearning (Tarun, Chundawat, Mandal, Kankanhalli, ICML 2023): Blindspot and
Gaussian fine-tuning, on a served prefix's editable LoRA adapters and head. Regression only.

Blindspot, as in the official ``unlearn.py``:

1. :func:`train_blindspot`: a "blindspot" model, the prefix with *fresh* adapters on its editable
   stages (LoRA ``A`` uniform in ``±1/sqrt(in_features)``, ``B`` zeros, as peft initialises them)
   and a fresh head, trained for a few epochs (Adam, lr 0.01) on (a share of) the retain set
   only, then frozen. The frozen stages keep their adapters: in S3T they were trained on slices
   without the forget set, and the student cannot change them either.
2. The student (the prefix itself) trains on forget + retain, shuffled together. Per batch with
   ``c`` = the share of forget rows in it::

       loss = c * L_f + (1 - c) * L_r
       L_r = MSE(student(x_r), y_r)
       L_f = MSE(student(x_f), blind(x_f))
             + attention_weight * sum_l mean((att(h_l^student) - att(h_l^blind))**2)

   ``h_l`` is the hidden state after each backbone layer the prefix runs with adapters (layer
   ``model.depth`` and up) and ``att(h)`` the attention-transfer map of Zagoruyko: the mean over
   the hidden dimension of ``h**2``, padding masked out, L2-normalised over the tokens.
   Neither step reads the forget set's targets.

Gaussian fine-tuning ("Gaussian amnesiac"): every forget target is replaced by a draw from
``N(mean, sd)`` of the training targets (retain and forget, as in the official code, or the retain
targets only), then the prefix is fine-tuned on the relabelled forget set plus the retain set.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional

from unlearning.approx.data import Examples, UnlearningInputError, task_loss
from unlearning.approx.model import PrefixModel
from unlearning.approx.registry import PassData, method
from unlearning.s3t.backbone import Encoded
from unlearning.s3t.config import Task
from unlearning.s3t.weights import LoraPair, StageWeights

__all__ = [
    "BlindspotConfig",
    "GaussianConfig",
    "attention_map",
    "blindspot",
    "gaussian_finetune",
    "train_blindspot",
]


def _check_positive_int(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}")


def _check_positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"`{name}` must be a positive number, got {value!r}")


def _check_seed(seed: int) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise ValueError(f"`seed` must be an integer in [0, 2**63), got {seed!r}")


@dataclass(frozen=True)
class BlindspotConfig:
    """Blindspot settings (defaults: the official AgeDB run).

    Args:
        blindspot_epochs, blindspot_lr: the blindspot model's training on the retain set (Adam).
        retain_fraction: the share of the retain set (drawn at random) the blindspot model sees.
        attention_weight: the weight of the layer-wise attention distance (``AT_beta``).
        epochs, lr, batch_size: the student's training on forget + retain (Adam); the batch size
            serves the blindspot model's training too.
        seed: the adapters' initialisation, the retain subset and the batch orders.
    """

    blindspot_epochs: int = 2
    blindspot_lr: float = 1e-2
    retain_fraction: float = 1.0
    attention_weight: float = 50.0
    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("blindspot_epochs", "epochs", "batch_size"):
            _check_positive_int(name, getattr(self, name))
        _check_positive("blindspot_lr", self.blindspot_lr)
        _check_positive("lr", self.lr)
        if not 0.0 < self.retain_fraction <= 1.0:
            raise ValueError(f"`retain_fraction` must be in (0, 1], got {self.retain_fraction!r}")
        if not (self.attention_weight >= 0 and math.isfinite(self.attention_weight)):
            raise ValueError(f"`attention_weight` must be >= 0, got {self.attention_weight!r}")
        _check_seed(self.seed)


@dataclass(frozen=True)
class GaussianConfig:
    """Gaussian fine-tuning settings (defaults: the official AgeDB run).

    Args:
        epochs, lr, batch_size: fine-tuning on the relabelled forget set plus the retain set.
        statistics: whose targets give the noise's mean and sd: ``all`` (retain and forget, as
            in the official code) or ``retain`` (the forget targets are then never read).
        seed: the noise and the batch orders.
    """

    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 256
    statistics: Literal["all", "retain"] = "all"
    seed: int = 0

    def __post_init__(self) -> None:
        _check_positive_int("epochs", self.epochs)
        _check_positive_int("batch_size", self.batch_size)
        _check_positive("lr", self.lr)
        if self.statistics not in ("all", "retain"):
            raise ValueError(f"`statistics` must be 'all' or 'retain', got {self.statistics!r}")
        _check_seed(self.seed)


# --- input checks ---------------------------------------------------------------------------


def _check_regression_model(model: PrefixModel) -> None:
    if model.head.out_features != 1:
        raise UnlearningInputError("this method needs a regression model (one output)")


def _values(examples: Examples, name: str) -> torch.Tensor:
    """The set's regression targets; an error for an empty, unlabelled or classification set."""
    targets = examples.labelled(name)
    _check_values(targets, name)
    return targets


def _check_values(targets: torch.Tensor | None, name: str) -> None:
    if targets is not None and not targets.is_floating_point():
        raise UnlearningInputError(
            f"the {name} set has class labels; this method needs regression values"
        )


def _check_forget(forget: Examples) -> None:
    """A non-empty forget set whose targets, if any, are values (they are not read)."""
    if len(forget) == 0:
        raise UnlearningInputError("the forget set is empty")
    _check_values(forget.targets, "forget")


# --- shared training ------------------------------------------------------------------------


def _fit(
    model: PrefixModel,
    data: Examples,
    loss_of: Callable[[Examples], torch.Tensor],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
) -> None:
    """Adam on ``model``'s trainable parameters, ``epochs`` shuffled passes over ``data``."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    model.train()
    try:
        for _ in range(epochs):
            for batch in data.batches(batch_size, generator):
                optimizer.zero_grad(set_to_none=True)
                loss_of(batch).backward()  # type: ignore[no-untyped-call]
                optimizer.step()
    finally:
        model.eval()


def _supervised(model: PrefixModel) -> Callable[[Examples], torch.Tensor]:
    def loss_of(batch: Examples) -> torch.Tensor:
        assert batch.targets is not None
        return task_loss(model(batch.encoded), batch.targets)

    return loss_of


# --- the blindspot model --------------------------------------------------------------------


def _uniform(shape: torch.Size, fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``: ``kaiming_uniform_(a=sqrt(5))`` (peft's LoRA A,
    ``nn.Linear``'s weight) and ``nn.Linear``'s bias."""
    bound = 1.0 / math.sqrt(fan_in)
    return (torch.rand(shape, generator=generator) * 2.0 - 1.0) * bound


def _fresh_pair(pair: LoraPair, generator: torch.Generator) -> LoraPair:
    a = _uniform(pair.a.shape, pair.a.shape[1], generator).to(pair.a)
    return LoraPair(a, torch.zeros_like(pair.b))


def _fresh_stages(model: PrefixModel, generator: torch.Generator) -> list[StageWeights]:
    """The prefix with fresh adapters on its editable stages and a fresh head."""
    stages = [
        dataclasses.replace(
            stage,
            adapters={key: _fresh_pair(pair, generator) for key, pair in stage.adapters.items()},
        )
        if index in model.editable
        else stage
        for index, stage in enumerate(model.stages)
    ]
    last = stages[-1]
    fan_in = last.head_weight.shape[1]
    stages[-1] = dataclasses.replace(
        last,
        head_weight=_uniform(last.head_weight.shape, fan_in, generator).to(last.head_weight),
        head_bias=_uniform(last.head_bias.shape, fan_in, generator).to(last.head_bias),
    )
    return stages


def _subset(examples: Examples, fraction: float, generator: torch.Generator) -> Examples:
    if fraction >= 1.0:
        return examples
    count = max(1, round(fraction * len(examples)))
    index = torch.randperm(len(examples), generator=generator)[:count].sort().values
    index = index.to(examples.encoded.inputs.device)
    targets = examples.targets[index] if examples.targets is not None else None
    return Examples(examples.encoded.rows(index), targets)


def train_blindspot(
    model: PrefixModel, retain: Examples, config: BlindspotConfig | None = None
) -> PrefixModel:
    """The frozen blindspot model: ``model``'s prefix with fresh editable adapters and head,
    trained on (``config.retain_fraction`` of) ``retain`` only. ``model`` is left unchanged."""
    config = config or BlindspotConfig()
    _check_regression_model(model)
    _values(retain, "retain")
    generator = torch.Generator().manual_seed(config.seed)
    modules = sorted({module for stage in model.stages for _, module in stage.adapters})
    blind = PrefixModel(
        model.backbone,
        _fresh_stages(model, generator),
        editable=model.editable,
        target_modules=modules,
    )
    _fit(
        blind,
        _subset(retain, config.retain_fraction, generator),
        _supervised(blind),
        epochs=config.blindspot_epochs,
        lr=config.blindspot_lr,
        batch_size=config.batch_size,
        generator=generator,
    )
    blind.requires_grad_(False)
    return blind


# --- the student ----------------------------------------------------------------------------


@contextmanager
def _layer_states(model: PrefixModel) -> Iterator[list[torch.Tensor]]:
    """Collects the hidden states after each layer ``model`` runs with adapters (``depth``
    and up), in order, during the forward passes inside the block."""
    states: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: Any, output: Any) -> None:
        states.append(output[0] if isinstance(output, tuple) else output)

    layers = model.backbone.layers
    handles = [layers[i].register_forward_hook(keep) for i in range(model.depth, len(layers))]
    try:
        yield states
    finally:
        for handle in handles:
            handle.remove()


def attention_map(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Attention transfer's map of hidden states ``[rows, positions, hidden]`` (tokens, or an
    image's class token and patches): the mean of the squares over the hidden dimension,
    padding zeroed (images have none), L2-normalised over the positions."""
    energy = hidden.pow(2).mean(dim=-1) * attention_mask.to(hidden.dtype)
    return functional.normalize(energy, dim=-1)


def _run(model: PrefixModel, encoded: Encoded) -> tuple[torch.Tensor, list[torch.Tensor]]:
    with _layer_states(model) as states:
        outputs = model(encoded)
    return outputs.squeeze(-1), states


def _forget_loss(
    student: tuple[torch.Tensor, list[torch.Tensor]],
    blind: tuple[torch.Tensor, list[torch.Tensor]],
    mask: torch.Tensor,
    weight: float,
) -> torch.Tensor:
    """Output MSE to the blindspot model plus the weighted layer-wise attention distances."""
    loss = functional.mse_loss(student[0], blind[0])
    for ours, theirs in zip(student[1], blind[1], strict=True):
        distance = attention_map(ours, mask) - attention_map(theirs, mask)
        loss = loss + weight * distance.pow(2).mean()
    return loss


@dataclass(frozen=True)
class _Mixed:
    """Forget rows first, then retain rows; ``values`` holds the retain targets only."""

    encoded: Encoded
    values: torch.Tensor
    n_forget: int

    @classmethod
    def of(cls, forget: Examples, retain: Examples, values: torch.Tensor) -> _Mixed:
        encoded = Examples.join(
            Examples(forget.encoded, None), Examples(retain.encoded, None)
        ).encoded
        return cls(encoded, values, len(forget))

    def rows(self) -> Examples:
        """Every row with its own index as target, so batches know which rows they hold."""
        return Examples(
            self.encoded, torch.arange(len(self.encoded), device=self.encoded.inputs.device)
        )


def _student_loss(
    student: PrefixModel, blind: PrefixModel, mixed: _Mixed, weight: float
) -> Callable[[Examples], torch.Tensor]:
    def loss_of(batch: Examples) -> torch.Tensor:
        assert batch.targets is not None
        index = batch.targets
        is_forget = index < mixed.n_forget
        outputs, states = _run(student, batch.encoded)
        share = float(is_forget.float().mean())
        loss = outputs.new_zeros(())
        if share < 1.0:
            retain_values = mixed.values[index[~is_forget] - mixed.n_forget]
            loss = loss + (1.0 - share) * functional.mse_loss(outputs[~is_forget], retain_values)
        if share > 0.0:
            forget = batch.encoded.rows(torch.nonzero(is_forget).flatten())
            with torch.no_grad():
                reference = _run(blind, forget)
            ours = (outputs[is_forget], [state[is_forget] for state in states])
            loss = loss + share * _forget_loss(ours, reference, forget.attention_mask, weight)
        return loss

    return loss_of


def blindspot(
    model: PrefixModel,
    forget: Examples,
    retain: Examples,
    config: BlindspotConfig | None = None,
) -> None:
    """Blindspot unlearning, in place: ``model`` fits ``retain`` and, on ``forget``, imitates
    a blindspot model (:func:`train_blindspot`) that never saw it. The forget set's targets
    are not read (they may be missing)."""
    config = config or BlindspotConfig()
    _check_regression_model(model)
    _check_forget(forget)
    values = _values(retain, "retain")
    blind = train_blindspot(model, retain, config)
    mixed = _Mixed.of(forget, retain, values)
    _fit(
        model,
        mixed.rows(),
        _student_loss(model, blind, mixed, config.attention_weight),
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        generator=torch.Generator().manual_seed(config.seed + 1),
    )


# --- Gaussian fine-tuning -------------------------------------------------------------------


def _noise_statistics(
    forget: Examples, retain_values: torch.Tensor, statistics: str
) -> tuple[float, float]:
    pool = retain_values
    if statistics == "all":
        pool = torch.cat([_values(forget, "forget"), retain_values])
    return float(pool.mean()), float(pool.std(correction=0))


def gaussian_finetune(
    model: PrefixModel,
    forget: Examples,
    retain: Examples,
    config: GaussianConfig | None = None,
) -> None:
    """Gaussian fine-tuning, in place: the forget targets become draws from ``N(mean, sd)`` of
    the training targets (``config.statistics``), then ``model`` is fine-tuned on the
    relabelled forget set plus the retain set."""
    config = config or GaussianConfig()
    _check_regression_model(model)
    _check_forget(forget)
    values = _values(retain, "retain")
    mean, sd = _noise_statistics(forget, values, config.statistics)
    generator = torch.Generator().manual_seed(config.seed)
    noise = mean + sd * torch.randn(len(forget), generator=generator)
    relabelled = Examples(forget.encoded, noise.to(values))
    _fit(
        model,
        Examples.join(relabelled, retain),
        _supervised(model),
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        generator=generator,
    )


@method(
    "blindspot",
    config=BlindspotConfig,
    tasks={Task.REGRESSION},
    description="a fresh model trained on retain only guides the original on the forget set, "
    "with a layer-wise attention distance (Tarun et al.)",
)
def run_blindspot(model: PrefixModel, data: PassData, config: BlindspotConfig) -> None:
    blindspot(model, data.forget, data.retain_set(), config)


@method(
    "gaussian_finetune",
    config=GaussianConfig,
    tasks={Task.REGRESSION},
    description="forget targets replaced by Gaussian noise of the targets' mean and spread, "
    "FT with retain",
)
def run_gaussian_finetune(model: PrefixModel, data: PassData, config: GaussianConfig) -> None:
    gaussian_finetune(model, data.forget, data.retain_set(), config)
