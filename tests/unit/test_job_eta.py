"""A training's ETA weighs S3T's stages by the slices they train on (stage i: i slices)."""

from __future__ import annotations

import uuid

from service.db.models import Job, JobKind
from service.jobs.service import stage_work


def _job(from_stage: int | None, done: int, total: int, *, sequence: bool = True) -> Job:
    return Job(
        kind=JobKind.retrain,
        sequence_id=uuid.uuid4() if sequence else None,
        from_stage=from_stage,
        stages_done=done,
        stages_total=total,
    )


def test_a_first_stage_is_the_smallest_share_of_a_training() -> None:
    # 4 stages train on 1, 2, 3 and 4 slices: after the first, 9 of 10 units are left, so the
    # ETA is 9x the time so far, not the 3x that counting stages would promise.
    assert stage_work([_job(1, 1, 4)]) == (1, 10)
    assert stage_work([_job(1, 3, 4)]) == (6, 10)


def test_a_retrain_counts_from_its_first_stage_and_a_training_sums_its_sequences() -> None:
    assert stage_work([_job(3, 1, 2)]) == (3, 7)
    assert stage_work([_job(1, 2, 4), _job(1, 0, 4)]) == (3, 20)


def test_a_pass_weighs_its_sequences_alike() -> None:
    assert stage_work([_job(None, 1, 3, sequence=False)]) == (1, 3)
