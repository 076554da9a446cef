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
from unlearning.approx.data import Examples, UnlearningInputError
from unlearning.approx.iau import iau
from unlearning.approx.model import PrefixModel
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


def examples_of(
    backbone: Backbone, config: S3TConfig, samples: Sequence[TrainingSample]
) -> Examples:
    """Encode samples with their targets: class indices, or values for regression."""
    if samples:
        encoded = backbone.encode([s.text for s in samples], config.max_length)
    else:  # an empty set, which the methods refuse by name where they need it
        empty = torch.zeros((0, config.max_length), dtype=torch.long)
        encoded = Encoded(empty, empty.clone())
    if config.task == Task.CLASSIFICATION:
        targets = torch.tensor([int(s.target) for s in samples], dtype=torch.long)
    else:
        targets = torch.tensor([float(s.target) for s in samples], dtype=torch.float32)
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
    forget.labelled("forget")
    model = PrefixModel(
        backbone,
        stages,
        editable=range(first_editable, len(stages)),
        target_modules=config.target_modules,
    )
    if method is Method.ssd:
        ssd(model, forget, Examples.join(forget, retain) if len(retain) else forget)
    elif method is Method.iau:
        iau(model, forget, retain)
    elif method is Method.finetune:
        finetune(model, retain)
    elif method is Method.gradient_ascent:
        gradient_ascent(model, forget)
    else:
        if config.task != Task.CLASSIFICATION:
            raise UnlearningInputError("random labels need a classification model")
        random_labels(model, forget, retain, config.n_labels)
    return model.export()[first_editable:]
