"""Queue and task names: constants, shared by the API (which enqueues) and the workers."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Queue(StrEnum):
    deletions = "deletions"  # short, high priority: deactivation side effects, approximate passes
    training = "training"  # long: training, exact retraining and exactness audits


def queue_for(kind: Queue, profile: str) -> str:
    """The broker queue of ``kind`` jobs for workers of one compute profile, e.g.
    ``training@cpu-torch2.13.0``: a model's jobs only ever reach workers of its profile."""
    return f"{kind.value}@{profile}"


def queue_kind(name: str) -> Queue:
    """The kind of a broker queue (``training@cpu-torch2.13.0`` is a ``training`` queue)."""
    return Queue(name.split("@", 1)[0])


class Priority(IntEnum):
    low = 0
    normal = 5
    high = 9


class TaskName(StrEnum):
    ping = "workers.ping"
    train_sequence = "workers.train_sequence"
    approximate_deletion = "workers.approximate_deletion"
    audit_exactness = "workers.audit_exactness"
    measure_quality = "workers.measure_quality"
