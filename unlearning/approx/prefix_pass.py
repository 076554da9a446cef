"""One approximate pass over a served prefix, by method name: what the service's job runs.

:func:`approximate_stages` takes the prefix's stages (stage 1 first), the index of the first
stage that saw the forgotten samples, the forget and retain samples, and a method; it returns the
edited stages from that index on. The stages below it are never changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import torch

from unlearning.approx.baselines import finetune, gradient_ascent, random_labels
from unlearning.approx.concepts import concept_poisoning
from unlearning.approx.data import Examples, UnlearningInputError
from unlearning.approx.iau import iau
from unlearning.approx.laf import laf
from unlearning.approx.model import PrefixModel
from unlearning.approx.regression import blindspot, gaussian_finetune
from unlearning.approx.saliency import rbm, salun
from unlearning.approx.sparsity import l1_sparse, prune_then_unlearn
from unlearning.approx.ssd import ssd
from unlearning.s3t.backbone import Backbone, Encoded
from unlearning.s3t.config import S3TConfig, Task
from unlearning.s3t.data import TrainingSample
from unlearning.s3t.weights import StageWeights


class Method(StrEnum):
    ssd = "ssd"
    iau = "iau"
    finetune = "finetune"
    gradient_ascent = "gradient_ascent"
    random_labels = "random_labels"
    l1_sparse = "l1_sparse"
    prune_then_unlearn = "prune_then_unlearn"
    salun = "salun"
    rbm = "rbm"
    blindspot = "blindspot"
    gaussian_finetune = "gaussian_finetune"
    laf = "laf"
    concept_poisoning = "concept_poisoning"


#: Methods that need class labels, and those made for regression outputs.
CLASSIFICATION_ONLY = frozenset({Method.random_labels, Method.salun, Method.concept_poisoning})
REGRESSION_ONLY = frozenset({Method.blindspot, Method.gaussian_finetune})


def unfit(method: Method, task: Task) -> str | None:
    """Why ``method`` cannot unlearn from a model of ``task``, or None when it can."""
    if method in CLASSIFICATION_ONLY and task != Task.CLASSIFICATION:
        return f"`{method.value}` needs a classification model"
    if method in REGRESSION_ONLY and task != Task.REGRESSION:
        return f"`{method.value}` is made for regression models"
    return None


def examples_of(
    backbone: Backbone, config: S3TConfig, samples: Sequence[TrainingSample]
) -> Examples:
    """Encode samples with their targets (class indices, or values for regression) on the
    backbone's device."""
    device = backbone.device
    if samples:
        encoded = backbone.encode([s.text for s in samples], config.max_length)
    else:  # an empty set, which the methods refuse by name where they need it
        empty = torch.zeros((0, config.max_length), dtype=torch.long, device=device)
        encoded = Encoded(empty, empty.clone())
    if config.task == Task.CLASSIFICATION:
        targets = torch.tensor([int(s.target) for s in samples], dtype=torch.long, device=device)
    else:
        values = [float(s.target) for s in samples]
        targets = torch.tensor(values, dtype=torch.float32, device=device)
    return Examples(encoded, targets)


def approximate_stages(
    backbone: Backbone,
    config: S3TConfig,
    stages: Sequence[StageWeights],
    first_editable: int,
    forget: Examples,
    retain: Examples,
    method: Method,
) -> list[StageWeights]:
    """Unlearn ``forget`` from stages ``first_editable..`` (0-based) of the prefix."""
    if not 0 <= first_editable < len(stages):
        raise UnlearningInputError(f"no stage {first_editable} in a prefix of {len(stages)}")
    reason = unfit(method, config.task)
    if reason is not None:
        raise UnlearningInputError(reason)
    if method is not Method.laf:  # the one method that reads no label
        forget.labelled("forget")
    model = PrefixModel(
        backbone,
        stages,
        editable=range(first_editable, len(stages)),
        target_modules=config.target_modules,
    )
    _run(model, method, forget, retain, config.n_labels)
    return model.export()[first_editable:]


def _run(
    model: PrefixModel, method: Method, forget: Examples, retain: Examples, n_labels: int
) -> None:
    """Apply ``method`` with its defaults to ``model`` in place."""
    match method:
        case Method.ssd:
            ssd(model, forget, Examples.join(forget, retain) if len(retain) else forget)
        case Method.iau:
            iau(model, forget, retain)
        case Method.finetune:
            finetune(model, retain)
        case Method.gradient_ascent:
            gradient_ascent(model, forget)
        case Method.random_labels:
            random_labels(model, forget, retain, n_labels)
        case Method.l1_sparse:
            l1_sparse(model, retain)
        case Method.prune_then_unlearn:
            prune_then_unlearn(model, retain)
        case Method.salun:
            salun(model, forget, retain, n_labels)
        case Method.rbm:
            rbm(model, forget, retain, n_labels=n_labels if forget.classification else None)
        case Method.blindspot:
            blindspot(model, forget, retain)
        case Method.gaussian_finetune:
            gaussian_finetune(model, forget, retain)
        case Method.laf:
            laf(model, forget, retain)
        case Method.concept_poisoning:
            concept_poisoning(model, forget, retain, n_labels)
