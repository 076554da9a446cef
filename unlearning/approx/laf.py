"""LAF, Label-Agnostic Forgetting (Shen, Zhang, Zhao, Bialkowski, Chen, Xu; ICLR 2024).

Follows the official code (ShaofeiShen768/LAF, ``VUnlearning.py``, ``Train.py``):

* the representation ``h(x)`` is the vector that feeds the head; here what the base model's
  family pools from the prefix's last hidden states (the input of :attr:`PrefixModel.head`: a
  mean over the tokens for the text encoders, the normalised class token for ViT and DeiT);
* stage 1 trains two MLP VAEs on the *original* model's representations, with the official
  architecture (``d -> 128 -> 32 -> (mu, log-var)``, decoder mirrored) and loss
  (``sum MSE / B + 0.025 KL``, Adam 1e-3): ``s_vae`` on the full training data (retain and forget,
  as the official notebook does), ``u_vae`` on the forget set;
* stage 2 alternates, per ``zip(forget batches, retain batches)`` pair (so an epoch has
  ``min(#forget batches, #retain batches)`` steps), an extractor-unlearning step
  ``L_UE = nmse(s_vae(e_r), e_r) - nmse(u_vae(e_f), e_f)`` with
  ``nmse = sum_i exp(d_i / (d_i + 1))`` (Adam ``lr_ue``) and a representation-alignment step
  ``L_RA = sum_i log(exp(c1_i) / sum_j exp(c2_j / temperature))`` with ``c = 1 - cos`` to the
  original model's representations (Adam ``lr_ra``); the VAEs are frozen but still sample;
* the optional repair ("LAF+R") trains the head only, with cross-entropy on the labelled retain
  set. It is the only part that reads labels: without ``repair`` no ``targets`` are touched.

Adapted:

* the extractor is the editable stages' LoRA matrices (the backbone is frozen, the head gets no
  gradient from representation losses); a prefix with no editable adapter is refused;
* the decoder's sigmoid output is replaced by a linear one around the per-dimension mean and
  scale of the VAE's training representations: pooled transformer states are signed and
  unbounded, unlike the official post-ReLU CNN embeddings;
* the original model (the official deep-copied teacher) is frozen and deterministic, so its
  representations are computed once up front rather than per step (same values, no copy);
* defaults are the official small-model (CNN) settings, with learning rates scaled to LoRA:
  the official ``lr_ue`` / ``lr_ra`` are 0.5x / 1x the original training rate (1e-4), here
  0.5x / 1x the prefix's default LoRA rate (1e-3);
* repair passes over the whole retain set each epoch (the official loop zips it with the forget
  loader, which caps it at the forget set's batch count), on cached representations;
* all randomness (VAE initialisation and sampling, shuffling) comes from ``seed`` without
  touching the global generators.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

from unlearning.approx.data import Examples, UnlearningInputError, task_loss
from unlearning.approx.model import PrefixModel
from unlearning.approx.registry import PassData, method
from unlearning.s3t.backbone import Encoded


@dataclass(frozen=True)
class LAFConfig:
    latent_dims: int = 8  # VAE latent size (official: 8 for the CNN, 16 for ResNet-18)
    vae_hidden: tuple[int, int] = (128, 32)  # VAE encoder widths (the decoder mirrors them)
    vae_epochs: int = 10
    vae_lr: float = 1e-3
    kl_weight: float = 0.025
    epochs: int = 20  # extractor-unlearning epochs (official UNLEARNING_EPOCH)
    lr_ue: float = 5e-4  # extractor-unlearning step
    lr_ra: float = 1e-3  # representation-alignment step
    temperature: float = 20.0
    batch_size: int = 32  # stage 2 (and repair) batches
    vae_batch_size: int = 32
    repair: bool = False  # LAF+R: the only part that reads (retain) labels
    repair_epochs: int = 5
    repair_lr: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "latent_dims",
            "vae_epochs",
            "epochs",
            "batch_size",
            "vae_batch_size",
            "repair_epochs",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1")
        if len(self.vae_hidden) != 2 or min(self.vae_hidden) < 1:
            raise ValueError("`vae_hidden` must be two positive widths")
        for name in ("vae_lr", "lr_ue", "lr_ra", "temperature", "repair_lr"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"`{name}` must be a positive number, got {value}")
        if not (self.kl_weight >= 0 and math.isfinite(self.kl_weight)):
            raise ValueError(f"`kl_weight` must be a non-negative number, got {self.kl_weight}")


@dataclass(frozen=True)
class LAFResult:
    steps: int  # stage-2 batch pairs (each one UE and one RA step)
    ue_loss: float  # mean L_UE over the last epoch
    ra_loss: float  # mean L_RA over the last epoch


class EmbeddingVAE(nn.Module):
    """The official MLP VAE on representations, with a linear output around their scale."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(
        self, data: torch.Tensor, latent: int, hidden: tuple[int, int], generator: torch.Generator
    ) -> None:
        super().__init__()
        dim, (wide, narrow) = data.shape[1], hidden
        self.encoder = nn.Sequential(
            nn.Linear(dim, wide), nn.ReLU(), nn.Linear(wide, narrow), nn.ReLU()
        )
        self.to_mu, self.to_log_var = nn.Linear(narrow, latent), nn.Linear(narrow, latent)
        self.decoder = nn.Sequential(
            nn.Linear(latent, narrow),
            nn.ReLU(),
            nn.Linear(narrow, wide),
            nn.ReLU(),
            nn.Linear(wide, dim),
        )
        spread = data.std(dim=0, correction=0).detach()
        floor = 0.1 * float(spread.mean())  # no dimension blown up; one row: no scaling
        self.register_buffer("mean", data.mean(dim=0).detach().clone())
        self.register_buffer(
            "scale", spread.clamp(min=floor) if floor > 0 else torch.ones_like(spread)
        )
        self.generator = generator
        _initialise(self, generator)

    def forward(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction (a sample), mu, log-variance."""
        hidden = self.encoder((e - self.mean) / self.scale)
        mu, log_var = self.to_mu(hidden), self.to_log_var(hidden)
        noise = torch.randn(mu.shape, generator=self.generator).to(mu.device, mu.dtype)
        z = mu + noise * torch.exp(0.5 * log_var)
        out: torch.Tensor = self.decoder(z) * self.scale + self.mean
        return out, mu, log_var


def _initialise(module: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default ``nn.Linear`` initialisation, drawn from ``generator``."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                bound = 1.0 / math.sqrt(layer.in_features)
                for p in (layer.weight, layer.bias):
                    p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)


def representation(model: PrefixModel, encoded: Encoded) -> torch.Tensor:
    """The pooled representation that feeds ``model.head`` (with gradients to the adapters)."""
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        captured.append(inputs[0])

    handle = model.head.register_forward_hook(keep)
    try:
        model(encoded)
    finally:
        handle.remove()
    return captured[0]


def _orders(
    n: int, size: int, generator: torch.Generator, device: torch.device
) -> Iterator[torch.Tensor]:
    """Shuffled batches of row indices, drawn on the CPU generator and moved to ``device`` once."""
    order = torch.randperm(n, generator=generator).to(device)
    for start in range(0, n, size):
        yield order[start : start + size]


def _represent_all(model: PrefixModel, encoded: Encoded, batch_size: int) -> torch.Tensor:
    """Representations of every row, in order, without gradients."""
    index = torch.arange(len(encoded), device=encoded.inputs.device)
    with torch.no_grad():
        parts = [
            representation(model, encoded.rows(index[start : start + batch_size]))
            for start in range(0, len(encoded), batch_size)
        ]
    return torch.cat(parts)


def _vae_loss(vae: EmbeddingVAE, e: torch.Tensor, kl_weight: float) -> torch.Tensor:
    out, mu, log_var = vae(e)
    mse = functional.mse_loss(out, e, reduction="sum")
    kl = -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp())
    return (mse + kl_weight * kl) / e.shape[0]


def train_vae(data: torch.Tensor, config: LAFConfig, generator: torch.Generator) -> EmbeddingVAE:
    """Stage 1: a VAE fitted to representations ``data`` (rows), then frozen."""
    vae = EmbeddingVAE(data.detach(), config.latent_dims, config.vae_hidden, generator)
    vae.to(data.device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=config.vae_lr)
    for _ in range(config.vae_epochs):
        for index in _orders(len(data), config.vae_batch_size, generator, data.device):
            optimizer.zero_grad(set_to_none=True)
            _vae_loss(vae, data[index], config.kl_weight).backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    return vae.eval().requires_grad_(False)


def nmse(e_out: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """The official bounded reconstruction error: ``sum_i exp(d_i / (d_i + 1))``."""
    d = (e_out - e).pow(2).sum(dim=1)
    return torch.exp(d / (d + 1)).sum()


def alignment_loss(
    e_r: torch.Tensor,
    teacher_r: torch.Tensor,
    e_f: torch.Tensor,
    teacher_f: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """``L_RA = sum_i log(exp(c1_i) / sum_j exp(c2_j / T))``, ``c = 1 - cos`` to the teacher."""
    c1 = 1 - functional.cosine_similarity(e_r, teacher_r, dim=1)
    c2 = 1 - functional.cosine_similarity(e_f, teacher_f, dim=1)
    return (c1 - torch.logsumexp(c2 / temperature, dim=0)).sum()


@dataclass
class _Stage2:
    model: PrefixModel
    forget: Encoded
    retain: Encoded
    teacher_f: torch.Tensor
    teacher_r: torch.Tensor
    s_vae: EmbeddingVAE
    u_vae: EmbeddingVAE
    ue: torch.optim.Optimizer
    ra: torch.optim.Optimizer
    temperature: float

    def step(self, f_index: torch.Tensor, r_index: torch.Tensor) -> tuple[float, float]:
        forget, retain = self.forget.rows(f_index), self.retain.rows(r_index)
        e_r, e_f = representation(self.model, retain), representation(self.model, forget)
        ue = nmse(self.s_vae(e_r)[0], e_r) - nmse(self.u_vae(e_f)[0], e_f)
        _descend(self.ue, ue)
        e_r, e_f = representation(self.model, retain), representation(self.model, forget)
        ra = alignment_loss(
            e_r, self.teacher_r[r_index], e_f, self.teacher_f[f_index], self.temperature
        )
        _descend(self.ra, ra)
        return float(ue.detach()), float(ra.detach())


def _descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()


def _repair(model: PrefixModel, retain: Encoded, labels: torch.Tensor, config: LAFConfig) -> None:
    """LAF+R: cross-entropy (or MSE) on the labelled retain set, the head only."""
    reps = _represent_all(model, retain, config.batch_size)
    optimizer = torch.optim.Adam(model.head.parameters(), lr=config.repair_lr)
    generator = torch.Generator().manual_seed(config.seed + 1)
    for _ in range(config.repair_epochs):
        for index in _orders(len(retain), config.batch_size, generator, reps.device):
            _descend(optimizer, task_loss(model.head(reps[index]), labels[index]))
    model.zero_grad(set_to_none=True)


def _check(model: PrefixModel, forget: Examples, retain: Examples) -> None:
    if len(forget) == 0:
        raise UnlearningInputError("the forget set is empty")
    if len(retain) == 0:
        raise UnlearningInputError("the retain set is empty")
    if len(model.lora) == 0:
        raise UnlearningInputError("LAF edits the extractor: the prefix has no editable adapter")


def laf(
    model: PrefixModel,
    forget: Examples,
    retain: Examples,
    config: LAFConfig | None = None,
) -> LAFResult:
    """Unlearn ``forget`` in place, label-free: the editable adapters (and, with ``repair``, the
    head) change. Labels are read only for the repair, from ``retain``."""
    config = config or LAFConfig()
    _check(model, forget, retain)
    labels = retain.labelled("retain") if config.repair else None
    generator = torch.Generator().manual_seed(config.seed)
    model.eval()
    teacher_f = _represent_all(model, forget.encoded, config.batch_size)
    teacher_r = _represent_all(model, retain.encoded, config.batch_size)
    stage = _Stage2(
        model,
        forget.encoded,
        retain.encoded,
        teacher_f,
        teacher_r,
        s_vae=train_vae(torch.cat([teacher_r, teacher_f]), config, generator),
        u_vae=train_vae(teacher_f, config, generator),
        ue=torch.optim.Adam(model.lora.parameters(), lr=config.lr_ue),
        ra=torch.optim.Adam(model.lora.parameters(), lr=config.lr_ra),
        temperature=config.temperature,
    )
    steps, losses = 0, (0.0, 0.0)
    for _ in range(config.epochs):
        pairs = zip(
            _orders(len(forget), config.batch_size, generator, teacher_f.device),
            _orders(len(retain), config.batch_size, generator, teacher_r.device),
            strict=False,
        )
        epoch = [stage.step(f_index, r_index) for f_index, r_index in pairs]
        steps += len(epoch)
        losses = (sum(u for u, _ in epoch) / len(epoch), sum(r for _, r in epoch) / len(epoch))
    model.zero_grad(set_to_none=True)
    if labels is not None:
        _repair(model, retain.encoded, labels, config)
    return LAFResult(steps=steps, ue_loss=losses[0], ra_loss=losses[1])


@method(
    "laf",
    config=LAFConfig,
    reads_labels=False,
    needs="one pooled representation per sample feeding a trained head",
    description="label-free: VAEs of the representations, then extractor unlearning and "
    "contrastive alignment (Shen et al.)",
)
def run_laf(model: PrefixModel, data: PassData, config: LAFConfig) -> LAFResult:
    return laf(model, data.forget, data.retain_set(), config)
