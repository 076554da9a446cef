"""Queue and task names: constants, shared by the API (which enqueues) and the workers."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Queue(StrEnum):
    deletions = "deletions"  # short, high priority: deactivation side effects, approximate passes
    training = "training"  # long: training and exact retraining


class Priority(IntEnum):
    low = 0
    normal = 5
    high = 9


class TaskName(StrEnum):
    ping = "workers.ping"
    train_sequence = "workers.train_sequence"
    approximate_deletion = "workers.approximate_deletion"
