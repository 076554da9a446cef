"""The baselines S3T is compared with, as configurations of the same engine.

- **full**: one model (one shard, one slice, one sequence) with LoRA on every layer, trained on
  all the data; a deletion means training it again from scratch.
- **SISA** (Bourtoule et al.): the same shards and slices as S3T, one order per shard, every stage
  continuing to train the adapters of every adapted layer and saving a checkpoint per slice; a
  deletion in slice k means retraining from checkpoint k-1 on.
"""

from __future__ import annotations

import dataclasses

from unlearning.s3t.config import S3TConfig, Schedule, SequenceStrategy


def full_config(config: S3TConfig) -> S3TConfig:
    return dataclasses.replace(
        config,
        n_shards=1,
        n_slices=1,
        budget=1,
        schedule=Schedule.SISA,
        sequence_strategy=SequenceStrategy.CYCLIC,
        deletion_prior=None,
    )


def sisa_config(config: S3TConfig) -> S3TConfig:
    return dataclasses.replace(
        config,
        budget=1,
        schedule=Schedule.SISA,
        sequence_strategy=SequenceStrategy.CYCLIC,
        deletion_prior=None,
    )
