"""Class unlearning via concept inference and data poisoning (Chang, Zhu, Xu, Liu, Zhou; 2024).

Only the abstract, a summary and a model card were read; there is no code. Everything below is
INFERRED (research notes, section 6) and the uncertain choices are options of
:class:`ConceptPoisonConfig`:

* **Concept bank** (no external bank exists offline, so concepts come from the data): vectors in
  representation space (the pooled vector that feeds the head, :func:`laf.representation`) of the
  *original* model on retain + forget, centred on their mean. ``bank="kmeans"`` (default): the
  centred centroids of a seeded k-means (k-means++ start, Lloyd steps); ``bank="pca"``: the top
  principal directions. A row's concept scores are the cosines of its centred representation
  with each concept vector. The bank holds ``min(n_concepts, rows)`` (k-means) or
  ``min(n_concepts, rows, dim)`` (PCA) concepts.
* **Post-hoc CBM**: a linear head from concept scores to classes, elastic-net penalised
  (``l1`` * |W|_1 + ``l2`` * |W|^2 on the weights), zero-initialised, full-batch Adam for
  ``cbm_steps`` on the labelled retain + forget rows. It is a probe; the served model is not
  changed by it.
* **Integrated Gradients** over concept scores with a zero baseline and ``ig_steps`` midpoint
  Riemann steps (:func:`integrated_gradients`, for any differentiable head).
* **Selection** (the "specific to c" rule): with ``A[k, i]`` the mean over class-k rows of the
  IG attribution of concept i to the class-k logit, concept i scores
  ``A[c, i] - mean over the other classes k present of A[k, i]``: it drives c's predictions more
  than it drives the other classes' own predictions. The top ``top_k`` are kept (ties to the
  lower index).
* **Poisoning**: the forget rows (every class present in the forget set is forgotten, each with
  its own concepts) get ``labels="random"``: a label drawn uniformly from the classes *not*
  forgotten, or ``labels="targeted"``: one class per forgotten class, by ``target``:
  ``"attribution"`` (default) the kept class with the largest mean CBM logit restricted to c's
  selected concepts on c's rows (the class c's own concept evidence supports most after c, so
  the relabelling is the least disruptive), or ``"centroid"`` the kept class whose mean concept
  scores on c's selected concepts are nearest (Euclidean) to c's. With ``poison_share`` > 0
  (default 0, off: the notes only say "and/or"), that share of the retain rows of kept classes
  with the highest mean score on c's selected concepts is relabelled likewise (never to their own
  label under ``"random"``). The poisoned rows, joined with the clean retain rows, fine-tune the
  model's trainable parameters (the editable LoRA matrices and the head) as the RL baseline
  does (Adam, seeded shuffles).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch.nn import functional

from unlearning.approx.baselines import TrainConfig, _train
from unlearning.approx.data import Examples, UnlearningInputError
from unlearning.approx.laf import representation
from unlearning.approx.model import PrefixModel
from unlearning.approx.registry import PassData, method
from unlearning.s3t.config import Task

PoisonLabels = Literal["random", "targeted"]
ConceptBankKind = Literal["kmeans", "pca"]
TargetRule = Literal["attribution", "centroid"]


@dataclass(frozen=True)
class ConceptPoisonConfig:
    labels: PoisonLabels = "random"
    n_concepts: int = 32
    top_k: int = 5
    ig_steps: int = 50
    bank: ConceptBankKind = "kmeans"  # [INFERRED] concepts from the model's own representations
    kmeans_iters: int = 50
    cbm_steps: int = 300
    cbm_lr: float = 1e-2
    l1: float = 1e-3  # elastic-net penalty on the CBM weights
    l2: float = 1e-4
    target: TargetRule = "attribution"  # [INFERRED] the "targeted" label, per forgotten class
    poison_share: float = 0.0  # [INFERRED] retain rows carrying c's concepts also poisoned
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        for name, allowed in (
            ("labels", PoisonLabels),
            ("bank", ConceptBankKind),
            ("target", TargetRule),
        ):
            options = get_args(allowed)
            if getattr(self, name) not in options:
                raise ValueError(f"`{name}` must be one of {', '.join(options)}")
        for name in ("n_concepts", "top_k", "ig_steps", "kmeans_iters", "cbm_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1")
        if self.top_k > self.n_concepts:
            raise ValueError("`top_k` must not exceed `n_concepts`")
        if not (self.cbm_lr > 0 and math.isfinite(self.cbm_lr)):
            raise ValueError("`cbm_lr` must be a positive number")
        for name in ("l1", "l2"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"`{name}` must be a non-negative number")
        if not 0 <= self.poison_share <= 1:
            raise ValueError("`poison_share` must be in [0, 1]")
        _ = self.training  # validates epochs, lr, batch_size

    @property
    def training(self) -> TrainConfig:
        return TrainConfig(self.epochs, self.lr, self.batch_size, self.seed)


@dataclass(frozen=True)
class ForgottenClass:
    label: int
    concepts: tuple[int, ...]  # selected concept indices, most specific first
    target: int | None  # the label its rows were given under "targeted"; None under "random"


@dataclass(frozen=True)
class ConceptReport:
    classes: tuple[ForgottenClass, ...]
    n_concepts: int  # concepts in the bank
    poisoned: int  # rows relabelled (forget rows plus any retain rows from `poison_share`)
    cbm_accuracy: float  # the probe's accuracy on the rows it was trained on


@dataclass(frozen=True)
class ConceptBank:
    """Unit concept vectors (``K x d``) around ``centre`` (``d``)."""

    vectors: torch.Tensor
    centre: torch.Tensor

    def scores(self, representations: torch.Tensor) -> torch.Tensor:
        """Cosine of each centred representation with each concept: ``N x K``."""
        centred = functional.normalize(representations - self.centre, dim=-1)
        return centred @ self.vectors.T


def represent(model: PrefixModel, examples: Examples, batch_size: int = 32) -> torch.Tensor:
    """The pooled representations of every row, in order, without gradients."""
    model.eval()
    with torch.no_grad():
        parts = [representation(model, batch.encoded) for batch in examples.batches(batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0)


def kmeans(data: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """Seeded k-means (k-means++ start, Lloyd steps): ``min(k, rows)`` centroids. An emptied
    cluster keeps its previous centroid."""
    n = data.shape[0]
    k = min(k, n)
    first = int(torch.randint(n, (1,), generator=generator))
    chosen = [first]
    nearest = ((data - data[first]) ** 2).sum(-1)
    for _ in range(1, k):
        total = float(nearest.sum())
        if total > 0:
            pick = int(torch.multinomial(nearest.cpu() / total, 1, generator=generator))
        else:  # all remaining rows coincide with a centroid
            pick = int(torch.randint(n, (1,), generator=generator))
        chosen.append(pick)
        nearest = torch.minimum(nearest, ((data - data[pick]) ** 2).sum(-1))
    centroids = data[chosen].clone()
    for _ in range(iters):
        assign = torch.cdist(data, centroids).argmin(-1)
        updated = centroids.clone()
        for j in range(k):
            members = data[assign == j]
            if len(members):
                updated[j] = members.mean(0)
        if torch.equal(updated, centroids):
            break
        centroids = updated
    return centroids


def concept_bank(
    representations: torch.Tensor,
    n_concepts: int,
    *,
    kind: ConceptBankKind = "kmeans",
    iters: int = 50,
    seed: int = 0,
) -> ConceptBank:
    """Concepts from unlabelled representations (see the module docstring)."""
    if representations.shape[0] < 2:
        raise UnlearningInputError("a concept bank needs at least two rows")
    centre = representations.mean(0)
    centred = representations - centre
    if kind == "pca":
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        vectors = vh[: min(n_concepts, vh.shape[0])]
    else:
        generator = torch.Generator().manual_seed(seed)
        vectors = kmeans(centred, n_concepts, iters, generator)
    return ConceptBank(functional.normalize(vectors, dim=-1), centre)


@dataclass(frozen=True)
class ConceptHead:
    """A post-hoc CBM's linear head: ``scores @ weight.T + bias``."""

    weight: torch.Tensor  # n_labels x K
    bias: torch.Tensor

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        return scores @ self.weight.T + self.bias


def fit_cbm(
    scores: torch.Tensor,
    labels: torch.Tensor,
    n_labels: int,
    *,
    steps: int = 300,
    lr: float = 1e-2,
    l1: float = 1e-3,
    l2: float = 1e-4,
) -> ConceptHead:
    """An elastic-net linear head from concept scores to classes (zero start, full-batch Adam)."""
    weight = torch.zeros(n_labels, scores.shape[1], device=scores.device, requires_grad=True)
    bias = torch.zeros(n_labels, device=scores.device, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=lr)
    scores = scores.detach()
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = functional.cross_entropy(scores @ weight.T + bias, labels)
            loss = loss + l1 * weight.abs().sum() + l2 * (weight**2).sum()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    return ConceptHead(weight.detach(), bias.detach())


def integrated_gradients(
    head: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    target: int,
    steps: int = 50,
) -> torch.Tensor:
    """IG of ``head(x)[:, target]`` per input coordinate, zero baseline, ``steps`` midpoint
    Riemann steps: ``x * mean_s grad f(alpha_s x)``, ``alpha_s = (s + 0.5) / steps``. The
    attributions of a row sum to about ``f(x) - f(0)`` (exactly for a linear head)."""
    if steps < 1:
        raise ValueError("`steps` must be at least 1")
    x = inputs.detach()
    total = torch.zeros_like(x)
    with torch.enable_grad():
        for s in range(steps):
            point = ((s + 0.5) / steps * x).requires_grad_(True)
            out = head(point)[:, target].sum()
            (grad,) = torch.autograd.grad(out, point)
            total += grad
    return x * total / steps


def specific_concepts(
    head: Callable[[torch.Tensor], torch.Tensor],
    scores: torch.Tensor,
    labels: torch.Tensor,
    label: int,
    top_k: int,
    steps: int = 50,
) -> tuple[tuple[int, ...], torch.Tensor]:
    """The ``top_k`` concepts most specific to ``label`` and every concept's specificity:
    ``A[label] - mean over the other classes k present of A[k]``, ``A[k]`` the mean IG of the
    class-k logit over class-k rows. Ties go to the lower index."""
    own = integrated_gradients(head, scores[labels == label], label, steps).mean(0)
    others = [
        integrated_gradients(head, scores[labels == k], k, steps).mean(0)
        for k in sorted({int(v) for v in labels.tolist()} - {label})
    ]
    specificity = own - torch.stack(others).mean(0) if others else own
    order = torch.sort(specificity, descending=True, stable=True).indices
    return tuple(int(i) for i in order[: min(top_k, len(order))]), specificity


def _check(forget: Examples, retain: Examples, n_labels: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = forget.labelled("forget")
    kept = retain.labelled("retain")
    if labels.is_floating_point() or kept.is_floating_point() or n_labels < 2:
        raise UnlearningInputError("concept poisoning needs a classification model")
    for name, values in (("forget", labels), ("retain", kept)):
        if int(values.min()) < 0 or int(values.max()) >= n_labels:
            raise UnlearningInputError(f"the {name} labels must lie in [0, {n_labels})")
    return labels, kept


def concept_poisoning(
    model: PrefixModel,
    forget: Examples,
    retain: Examples,
    n_labels: int,
    config: ConceptPoisonConfig | None = None,
) -> ConceptReport:
    """Forget every class present in ``forget`` (its rows), in place: select each class's
    specific concepts on a post-hoc CBM, relabel its rows (random or targeted), fine-tune on them
    with the clean retain rows. Classification only."""
    config = config or ConceptPoisonConfig()
    labels, kept_labels = _check(forget, retain, n_labels)
    forgotten = sorted({int(v) for v in labels.tolist()})
    allowed = [k for k in range(n_labels) if k not in forgotten]
    if not allowed:
        raise UnlearningInputError("no class would be left to relabel the forget set with")

    data = Examples.join(forget, retain)
    all_labels = torch.cat([labels, kept_labels])
    reps = represent(model, data, config.batch_size)
    bank = concept_bank(
        reps, config.n_concepts, kind=config.bank, iters=config.kmeans_iters, seed=config.seed
    )
    scores = bank.scores(reps)
    head = fit_cbm(
        scores,
        all_labels,
        n_labels,
        steps=config.cbm_steps,
        lr=config.cbm_lr,
        l1=config.l1,
        l2=config.l2,
    )
    cbm_accuracy = float((head(scores).argmax(-1) == all_labels).float().mean())

    generator = torch.Generator().manual_seed(config.seed)
    device = labels.device
    allowed_t = torch.tensor(allowed, device=device)
    new_forget = labels.clone()
    new_retain = kept_labels.clone()
    poisoned_retain = torch.zeros(len(kept_labels), dtype=torch.bool, device=device)
    retain_scores = scores[len(labels) :]
    results = []
    for c in forgotten:
        concepts, _ = specific_concepts(head, scores, all_labels, c, config.top_k, config.ig_steps)
        chosen = list(concepts)
        rows = labels == c
        target = None
        if config.labels == "targeted":
            target = _target(
                head,
                scores[: len(labels)][rows],
                scores,
                all_labels,
                chosen,
                allowed,
                config.target,
            )
            new_forget[rows] = target
        else:
            draw = torch.randint(len(allowed), (int(rows.sum()),), generator=generator).to(device)
            new_forget[rows] = allowed_t[draw]
        if config.poison_share > 0:
            count = round(config.poison_share * len(kept_labels))
            eligible = torch.tensor(
                [int(v) not in forgotten for v in kept_labels.tolist()], device=device
            )
            eligible &= ~poisoned_retain
            strength = retain_scores[:, chosen].mean(-1).masked_fill(~eligible, -math.inf)
            order = torch.sort(strength, descending=True, stable=True).indices
            picked = [int(i) for i in order[: min(count, int(eligible.sum()))]]
            for i in picked:
                own = int(kept_labels[i])
                if target is not None:
                    new_retain[i] = target
                else:
                    others = [k for k in allowed if k != own] or allowed
                    new_retain[i] = others[
                        int(torch.randint(len(others), (1,), generator=generator))
                    ]
                poisoned_retain[i] = True
        results.append(ForgottenClass(c, concepts, target))

    training = Examples.join(
        Examples(forget.encoded, new_forget), Examples(retain.encoded, new_retain)
    )
    _train(model, training, config.training, 1.0)
    return ConceptReport(
        tuple(results),
        bank.vectors.shape[0],
        len(labels) + int(poisoned_retain.sum()),
        cbm_accuracy,
    )


def _target(
    head: ConceptHead,
    own_scores: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    chosen: list[int],
    allowed: list[int],
    rule: TargetRule,
) -> int:
    """The one label class c's rows get under "targeted" (see the module docstring)."""
    if rule == "attribution":
        logits = own_scores[:, chosen].mean(0) @ head.weight[:, chosen].T  # n_labels
        fit = {k: float(logits[k]) for k in allowed}
    else:
        mean_c = own_scores[:, chosen].mean(0)
        fit = {}
        for k in allowed:
            rows = scores[labels == k]
            if len(rows):
                fit[k] = -float(torch.linalg.vector_norm(rows[:, chosen].mean(0) - mean_c))
        if not fit:
            fit = {k: 0.0 for k in allowed}
    return max(fit, key=lambda k: (fit[k], -k))


@method(
    "concept_poisoning",
    config=ConceptPoisonConfig,
    tasks={Task.CLASSIFICATION},
    needs="class labels and a classifier head's concepts",
    forgets="classes",
    description="class unlearning: a post-hoc concept bottleneck and Integrated Gradients find "
    "the class's concepts, then poisoned-label FT (inferred)",
)
def run_concept_poisoning(
    model: PrefixModel, data: PassData, config: ConceptPoisonConfig
) -> ConceptReport:
    return concept_poisoning(model, data.forget, data.retain_set(), data.n_labels, config)
