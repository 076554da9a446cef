"""One approximate pass over a served prefix, by method name: what the service's job runs.

:func:`approximate_stages` takes the prefix's stages (stage 1 first), the index of the first
stage that saw the forgotten samples, the forget and retain samples, and a method's name (one of
:mod:`unlearning.approx.registry`'s); it returns the edited stages from that index on. The stages
below it are never changed. With the prefix's
:class:`~unlearning.approx.statistics.PassStatistics` (computed after training), the methods that
read statistics (``reads_statistics`` in the registry) need no retain set: the pass touches only
the forget set.

:func:`choose_method` is the ``auto`` choice by the shape of a request.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import torch

from unlearning.approx import registry
from unlearning.approx.data import Examples, UnlearningInputError
from unlearning.approx.model import PrefixModel
from unlearning.approx.registry import MethodName, PassData
from unlearning.approx.statistics import PassStatistics, data_statistics
from unlearning.families import Modality
from unlearning.s3t.backbone import Backbone
from unlearning.s3t.config import S3TConfig, Task
from unlearning.s3t.data import TrainingSample, next_token_labels
from unlearning.s3t.weights import StageWeights

__all__ = [
    "MethodName",
    "RequestShape",
    "approximate_stages",
    "auto_candidates",
    "chain_statistics",
    "choose_method",
    "examples_of",
    "unfit",
]


class RequestShape(StrEnum):
    """What a deletion removes, as far as choosing a method goes."""

    samples = "samples"  # samples named by id (a few, or a large random share)
    subject = "subject"  # every sample of one data subject
    whole_class = "whole_class"  # every sample of one class (a class deletion)


def choose_method(
    shape: RequestShape, task: Task, share: float, modality: Modality
) -> tuple[MethodName, str]:
    """The ``auto`` method for a request of this shape removing this share of the affected
    shards' samples from a model of ``task`` on a base model of ``modality``, and why (for the
    job note and the certificate): the first of :func:`auto_candidates`."""
    return auto_candidates(shape, task, share, modality)[0]


def auto_candidates(
    shape: RequestShape, task: Task, share: float, modality: Modality
) -> list[tuple[MethodName, str]]:
    """The methods ``auto`` may pick for such a request, preferred first, each with why. Measured
    through the service in ``bench/service_passes.py``: for random shares of 1 % and 10 % SSD
    stays within 5 points of the retrain (IAU does not at 10 %), for a whole class suppression
    does. Only methods that fit the task and the modality; UnlearningInputError when none does.
    """
    candidates: list[tuple[MethodName, str]] = []
    if shape is RequestShape.whole_class and task == Task.CLASSIFICATION:
        candidates += [
            (
                "suppress_class",
                "a whole class leaves: its output is suppressed at once (SSD and IAU do not "
                "forget a class; fine-tuning does, at half a retrain)",
            ),
            (
                "refit_head",
                "a whole class leaves: the head alone is refit without it, on the stored features",
            ),
        ]
    candidates += [
        (
            "ssd",
            f"{shape.value}, {share:.1%} of the samples: SSD dampens what the forget set alone "
            "drives, from the stored importance (one gradient pass over the forget set)",
        ),
        (
            "iau",
            f"{shape.value}, {share:.1%} of the samples: IAU steps along the stored gradient "
            "minus the forget set's (one gradient pass over the forget set)",
        ),
    ]
    fitting = [(name, why) for name, why in candidates if unfit(name, task, modality) is None]
    if not fitting:
        raise UnlearningInputError(
            f"no approximate method fits a {task.value} model on a {modality.value} base model"
        )
    return fitting


def unfit(method: MethodName, task: Task, modality: Modality) -> str | None:
    """Why ``method`` cannot unlearn from a model of ``task`` on a base model of ``modality``,
    or None when it can; UnknownMethodError for a name no method has."""
    return registry.get(method).unfit(task, modality)


def examples_of(
    backbone: Backbone, config: S3TConfig, samples: Sequence[TrainingSample]
) -> Examples:
    """Encode samples with their targets (class indices, values for regression, next-token
    labels off the response for a causal LM) on the backbone's device."""
    device = backbone.device
    # An empty set (no row, the same shape) is refused by name by the methods that need rows.
    encoded = backbone.encode([s.content for s in samples], config.max_length)
    if config.task == Task.CAUSAL_LM:
        return Examples(encoded, next_token_labels(encoded).to(device))
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
    method: MethodName,
    *,
    statistics: PassStatistics | None = None,
    method_config: object | None = None,
) -> list[StageWeights]:
    """Unlearn ``forget`` from stages ``first_editable..`` (0-based) of the prefix.

    ``statistics``: the prefix's, over its full training data (``retain`` plus ``forget`` and
    nothing else); with them ``retain`` may be None for the methods that read statistics.
    ``method_config``: an instance of the method's config class (default: its defaults, e.g.
    ``registry.get(method).configure(overrides)``).
    """
    spec = registry.get(method)
    if not 0 <= first_editable < len(stages):
        raise UnlearningInputError(f"no stage {first_editable} in a prefix of {len(stages)}")
    reason = spec.unfit(config.task, backbone.modality)
    if reason is not None:
        raise UnlearningInputError(reason)
    if method_config is None:
        method_config = spec.configure()
    elif not isinstance(method_config, spec.config):
        raise TypeError(f"`{method}` takes a {spec.config.__name__}, not {method_config!r}")
    if spec.reads_labels:
        forget.labelled("forget")
    if statistics is not None:
        statistics.check_count(len(forget))
        statistics = statistics.to(backbone.device)
    if not spec.reads_statistics:
        statistics = None
    if retain is None and statistics is None:
        raise UnlearningInputError(f"`{method}` needs the retain set here")
    model = PrefixModel(
        backbone,
        stages,
        editable=range(first_editable, len(stages)),
        target_modules=config.target_modules,
    )
    data = PassData(forget, None if statistics is not None else retain, statistics, config.n_labels)
    spec.run(model, data, method_config)
    return model.export()[first_editable:]
