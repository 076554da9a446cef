"""One approximate pass over a served prefix, by method name: what the service's job runs.

:func:`approximate_stages` takes the prefix's stages (stage 1 first), the index of the first
stage that saw the forgotten samples, the forget and retain samples, and a method; it returns the
edited stages from that index on. The stages below it are never changed. With the prefix's
:class:`~unlearning.approx.statistics.PassStatistics` (computed after training), the methods in
:data:`READS_STATISTICS` need no retain set: the pass touches only the forget set.

:func:`choose_method` is the ``auto`` choice by the shape of a request.
"""

from __future__ import annotations

from collections import Counter
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
from unlearning.approx.ssd import authors_order, ssd
from unlearning.approx.statistics import PassStatistics, data_statistics
from unlearning.approx.suppression import (
    pooled_features,
    refit_head,
    remaining_counts,
    suppress_classes,
)
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
    suppress_class = "suppress_class"
    refit_head = "refit_head"


#: Methods that need class labels, and those made for regression outputs.
CLASSIFICATION_ONLY = frozenset(
    {
        Method.random_labels,
        Method.salun,
        Method.concept_poisoning,
        Method.suppress_class,
        Method.refit_head,
    }
)
#: Methods that, given the prefix's statistics, read nothing of the retain set.
READS_STATISTICS = frozenset({Method.ssd, Method.iau, Method.suppress_class, Method.refit_head})


class RequestShape(StrEnum):
    """What a deletion removes, as far as choosing a method goes."""

    samples = "samples"  # samples named by id (a few, or a large random share)
    subject = "subject"  # every sample of one data subject
    whole_class = "whole_class"  # every sample of one class (a class deletion)


def choose_method(shape: RequestShape, task: Task, share: float) -> tuple[Method, str]:
    """The ``auto`` method for a request of this shape removing this share of the affected
    shards' samples, and why (for the job note and the certificate). Measured through the
    service in ``bench/service_passes.py``: for random shares of 1 % and 10 % SSD stays within
    5 points of the retrain (IAU does not at 10 %), for a whole class suppression does."""
    if shape is RequestShape.whole_class and task == Task.CLASSIFICATION:
        return Method.suppress_class, (
            "a whole class leaves: its output is suppressed at once (SSD and IAU do not "
            "forget a class; fine-tuning does, at half a retrain)"
        )
    return Method.ssd, (
        f"{shape.value}, {share:.1%} of the samples: SSD dampens what the forget set alone "
        "drives, from the stored importance (one gradient pass over the forget set)"
    )


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


def chain_statistics(
    backbone: Backbone,
    config: S3TConfig,
    stages: Sequence[StageWeights],
    samples: Sequence[TrainingSample],
) -> PassStatistics:
    """The statistics of a trained chain (stage 1 first) over the samples it was trained on,
    in their order, for every later pass on it (all stages editable)."""
    model = PrefixModel(
        backbone, stages, editable=range(len(stages)), target_modules=config.target_modules
    )
    return data_statistics(model, examples_of(backbone, config, samples))


def approximate_stages(
    backbone: Backbone,
    config: S3TConfig,
    stages: Sequence[StageWeights],
    first_editable: int,
    forget: Examples,
    retain: Examples | None,
    method: Method,
    *,
    statistics: PassStatistics | None = None,
) -> list[StageWeights]:
    """Unlearn ``forget`` from stages ``first_editable..`` (0-based) of the prefix.

    ``statistics``: the prefix's, over its full training data (``retain`` plus ``forget`` and
    nothing else); with them ``retain`` may be None for the methods in :data:`READS_STATISTICS`.
    """
    if not 0 <= first_editable < len(stages):
        raise UnlearningInputError(f"no stage {first_editable} in a prefix of {len(stages)}")
    reason = unfit(method, config.task)
    if reason is not None:
        raise UnlearningInputError(reason)
    if method is not Method.laf:  # the one method that reads no label
        forget.labelled("forget")
    if statistics is not None:
        statistics.check_count(len(forget))
        statistics = statistics.to(backbone.device)
    if retain is None and (statistics is None or method not in READS_STATISTICS):
        raise UnlearningInputError(f"`{method.value}` needs the retain set here")
    model = PrefixModel(
        backbone,
        stages,
        editable=range(first_editable, len(stages)),
        target_modules=config.target_modules,
    )
    if statistics is not None and method in READS_STATISTICS:
        _run_with(model, method, forget, statistics)
    else:
        assert retain is not None
        _run(model, method, forget, retain, config.n_labels)
    return model.export()[first_editable:]


def _run_with(
    model: PrefixModel, method: Method, forget: Examples, statistics: PassStatistics
) -> None:
    """Apply ``method`` with its defaults, reading the retain set's part from ``statistics``."""
    match method:
        case Method.ssd:
            ssd(model, forget, data_importance=statistics.importance)
        case Method.iau:
            iau(model, forget, None, data_gradient=statistics.gradient)
        case Method.suppress_class:
            suppress_classes(model, forget, remaining_counts(statistics.targets, forget))
        case Method.refit_head:
            refit_head(model, forget, statistics.features, statistics.targets)


def _run(
    model: PrefixModel, method: Method, forget: Examples, retain: Examples, n_labels: int
) -> None:
    """Apply ``method`` with its defaults to ``model`` in place."""
    match method:
        case Method.ssd:
            ssd(model, forget, authors_order(forget, retain))
        case Method.iau:
            iau(model, forget, retain)
        case Method.suppress_class:
            targets = retain.targets if retain.targets is not None else torch.zeros(0)
            suppress_classes(model, forget, Counter(int(c) for c in targets.tolist()))
        case Method.refit_head:
            refit_head(model, forget, *pooled_features(model, authors_order(forget, retain)))
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
