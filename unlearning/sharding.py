"""Deterministic placement of samples on shards and slices, and how balanced the slices are.

The placement must be the same in every process and every release, so it uses SHA-256 of the
model id and an identifier, never Python's salted ``hash``. Two policies:

- ``sample``: each sample by its own id, so samples spread uniformly over every shard and slice;
- ``subject``: every sample of one data subject in one shard and one slice, so a subject's
  deletion cuts one slice of one shard, not every order of every shard. A subject keeps the
  slice of its first samples; a *new* subject goes to the least-loaded slice of the model
  (:func:`place_subjects`), which keeps the slices balanced, where a hash of the subject left
  some slices empty and others heavy (1,000 rows of 20 subjects on 4 x 3 slices: 5 empty slices
  and one of 51 rows). Samples without a subject fall back to their id.

The balanced rule is deterministic given what the model holds and the batch, not a function of
the identifiers alone: the slice it chose is recorded on each sample's row, and that record,
not a recomputation, is where a sample lives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import NamedTuple


class Placement(NamedTuple):
    shard: int
    slice: int


class PlacementPolicy(StrEnum):
    sample = "sample"
    subject = "subject"


#: Slices further than this factor from the mean size are reported as unbalanced ...
IMBALANCE_FACTOR = 2.0
#: ... once the mean has at least this many samples (small models are noisy by nature).
IMBALANCE_MIN_MEAN = 10.0


def assign(model_key: str, external_id: str, n_shards: int, n_slices: int) -> Placement:
    """Shard and slice of a sample: independent, uniform and stable for a given key."""
    if n_shards < 1 or n_slices < 1:
        raise ValueError("`n_shards` and `n_slices` must be at least 1")
    digest = hashlib.sha256(f"{model_key}\x1f{external_id}".encode()).digest()
    shard = int.from_bytes(digest[:8], "big") % n_shards
    slice_ = int.from_bytes(digest[8:16], "big") % n_slices
    return Placement(shard, slice_)


def place(
    model_key: str,
    external_id: str,
    subject_id: str | None,
    n_shards: int,
    n_slices: int,
    policy: PlacementPolicy | str = PlacementPolicy.sample,
) -> Placement:
    """Shard and slice of a sample under ``policy`` by hash alone. Under ``subject`` this is
    a subject's *hashed* slice: where :func:`place_subjects` starts looking among the
    least-loaded slices (and where the first subject of an empty model goes)."""
    if PlacementPolicy(policy) is PlacementPolicy.subject and subject_id is not None:
        # Another key than the samples', so a subject never shares a hash with a sample id.
        return assign(f"{model_key}\x1fsubject", subject_id, n_shards, n_slices)
    return assign(model_key, external_id, n_shards, n_slices)


def place_subjects(
    model_key: str,
    subjects: Mapping[str, int],
    loads: Sequence[Sequence[int]],
    n_shards: int,
    n_slices: int,
) -> dict[str, Placement]:
    """Slices of new subjects: each on the least-loaded slice of the model, greedily.

    ``subjects``: each new subject (one with no live sample in the model) and how many samples
    this batch brings of it; ``loads[shard][slice]``: the model's live samples per slice,
    counting this batch's samples whose slice is already known (of subjects the model holds,
    and of no subject). Subjects are placed in a fixed order, the larger first (then by id),
    each on the slice with the fewest samples at that moment, counting the subjects placed
    before it; among equally loaded slices, the first at or after the subject's hashed slice
    (:func:`place`) in shard-major order, wrapping around. The result depends only on these
    arguments, so every process places a batch alike.

    Bound: the slice a subject goes to holds at most the mean load when it is chosen (the
    minimum is at most the mean), and the mean never falls while samples arrive. So while
    subjects arrive, each with all of its samples in one batch, every slice holds at most
    ``mean + s_max`` samples, ``s_max`` the largest subject's size (the greedy list-scheduling
    bound; placing larger subjects first only tightens it). Outside that bound: later samples
    of a subject the model already holds join its slice (one subject, one slice comes first),
    samples without a subject are spread by hash, and a deletion shrinks slices but may lower
    the mean below what a slice kept.
    """
    if n_shards < 1 or n_slices < 1:
        raise ValueError("`n_shards` and `n_slices` must be at least 1")
    flat = [loads[shard][slice_] for shard in range(n_shards) for slice_ in range(n_slices)]
    cells = len(flat)
    placed: dict[str, Placement] = {}
    for subject in sorted(subjects, key=lambda s: (-subjects[s], s)):
        start = _flat(place(model_key, "", subject, n_shards, n_slices, "subject"), n_slices)
        lowest = min(flat)
        cell = (
            next(i for i in (start + k for k in range(cells)) if flat[i % cells] == lowest) % cells
        )
        flat[cell] += subjects[subject]
        placed[subject] = Placement(*divmod(cell, n_slices))
    return placed


def _flat(where: Placement, n_slices: int) -> int:
    return where.shard * n_slices + where.slice


def unbalanced_slices(sizes: Sequence[Sequence[int]]) -> list[tuple[int, int, int, float]]:
    """``(shard, slice, size, mean)`` of each slice more than :data:`IMBALANCE_FACTOR` times
    above or below the mean slice size (``sizes[shard][slice]``), when the mean is large enough
    to tell."""
    flat = [size for shard in sizes for size in shard]
    if not flat:
        return []
    mean = sum(flat) / len(flat)
    if mean < IMBALANCE_MIN_MEAN:
        return []
    return [
        (shard, slice_, size, mean)
        for shard, row in enumerate(sizes)
        for slice_, size in enumerate(row)
        if size > IMBALANCE_FACTOR * mean or size < mean / IMBALANCE_FACTOR
    ]
