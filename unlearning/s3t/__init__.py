"""S3T: sharded, sliced, sequence-aware LoRA training with exact deletion.

The engine (:class:`S3TEngine`) trains every shard's slice sequences stage by stage, says which
stages a deletion invalidates, retrains them from the last valid stage, and serves an ensemble of
valid prefixes. Full fine-tuning and SISA are configurations of the same engine
(:mod:`unlearning.s3t.baselines`).
"""

from unlearning.s3t.backbone import Backbone, default_backbone_path, load_backbone
from unlearning.s3t.config import S3TConfig, Schedule, SequenceStrategy, Task
from unlearning.s3t.data import TrainingSample
from unlearning.s3t.engine import (
    Generated,
    ModelSpec,
    Prediction,
    S3TEngine,
    SequenceKey,
    TrainedLayer,
)
from unlearning.s3t.generation import Generation, LmEnsemble, Sampling, Scored

__all__ = [
    "Backbone",
    "Generated",
    "Generation",
    "LmEnsemble",
    "ModelSpec",
    "Prediction",
    "S3TConfig",
    "S3TEngine",
    "Sampling",
    "Schedule",
    "Scored",
    "SequenceKey",
    "SequenceStrategy",
    "Task",
    "TrainedLayer",
    "TrainingSample",
    "default_backbone_path",
    "load_backbone",
]
