"""Sample placement is stable across processes and releases, spreads evenly, and places new
subjects so that no slice exceeds the mean by more than the largest subject."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearning.sharding import (
    PlacementPolicy,
    assign,
    place,
    place_subjects,
    unbalanced_slices,
)


def test_known_values_never_change() -> None:
    # Pinned: a change here would move every registered sample to another shard or slice.
    assert assign("model-1", "sample-1", 5, 4) == (4, 2)
    assert assign("model-1", "sample-2", 5, 4) == (0, 2)
    assert assign("model-2", "sample-1", 5, 4) == (2, 3)


def test_same_in_another_process() -> None:
    code = "from unlearning.sharding import assign; print(tuple(assign('m', 'x', 7, 3)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123"},
    ).stdout.strip()
    assert out == str(tuple(assign("m", "x", 7, 3)))


def test_spread_is_roughly_uniform() -> None:
    counts = Counter(assign("m", f"s{i}", 4, 3) for i in range(12_000))
    assert len(counts) == 12
    assert all(800 <= c <= 1200 for c in counts.values())


@pytest.mark.parametrize(("m", "n"), [(0, 1), (1, 0)])
def test_rejects_empty_layouts(m: int, n: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        assign("m", "x", m, n)


def test_subject_placement_keeps_a_subject_together() -> None:
    places = {place("m", f"s{i}", "alice", 8, 4, PlacementPolicy.subject) for i in range(200)}
    assert places == {place("m", "any", "alice", 8, 4, "subject")}  # one shard, one slice
    # Pinned, as the sample placement: a change would move every subject.
    assert place("model-1", "x", "alice", 5, 4, "subject") == (4, 1)
    spread = Counter(place("m", "x", f"subject-{i}", 4, 3, "subject") for i in range(12_000))
    assert len(spread) == 12 and all(800 <= c <= 1200 for c in spread.values())


def test_samples_without_a_subject_and_sample_placement_use_the_sample_id() -> None:
    assert place("m", "s1", None, 8, 4, "subject") == assign("m", "s1", 8, 4)
    assert place("m", "s1", "alice", 8, 4, "sample") == assign("m", "s1", 8, 4)
    # A subject never shares a key with a sample id of the same name.
    assert place("m", "x", "alice", 997, 991, "subject") != assign("m", "alice", 997, 991)


@pytest.mark.parametrize("seed", ["0", "123", "random"])
def test_subject_placement_is_the_same_in_another_process(seed: str) -> None:
    code = (
        "from unlearning.sharding import place; "
        "print(tuple(place('m', 'x', 'bob', 7, 3, 'subject')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": seed},
    ).stdout.strip()
    assert out == str(tuple(place("m", "x", "bob", 7, 3, "subject")))


def test_unbalanced_slices_are_those_far_from_the_mean() -> None:
    assert unbalanced_slices([[10, 10], [10, 10]]) == []
    assert unbalanced_slices([[1, 9], [2, 0]]) == []  # a mean of 3: too small to tell
    found = unbalanced_slices([[20, 20, 20], [20, 100, 5]])
    assert [(shard, slice_, size) for shard, slice_, size, _ in found] == [(1, 1, 100), (1, 2, 5)]


def _loads_after(
    batches: list[dict[str, int]], n_shards: int, n_slices: int, *, hashed: bool = False
) -> list[list[list[int]]]:
    """Slice loads after each batch of new subjects (``{subject: size}``), placed by the
    balanced rule (or by the subject's hash alone)."""
    loads = [[0] * n_slices for _ in range(n_shards)]
    history = []
    for batch in batches:
        if hashed:
            where = {s: place("m", "", s, n_shards, n_slices, "subject") for s in batch}
        else:
            where = place_subjects("m", batch, loads, n_shards, n_slices)
        for subject, size in batch.items():
            loads[where[subject].shard][where[subject].slice] += size
        history.append([row[:] for row in loads])
    return history


def _within_bound(loads: list[list[int]], largest: int) -> bool:
    """The bound :func:`place_subjects` states: no slice above the mean plus the largest
    subject."""
    flat = [size for row in loads for size in row]
    return max(flat) <= sum(flat) / len(flat) + largest


#: The issue's example: 1,000 rows of 20 subjects (50 each) on 4 shards of 3 slices.
ISSUE_EXAMPLE = [{f"subject-{i}": 50 for i in range(20)}]


def test_the_hash_rule_breaks_the_bound_on_the_issues_example() -> None:
    hashed = _loads_after(ISSUE_EXAMPLE, 4, 3, hashed=True)[-1]
    assert not _within_bound(hashed, 50)
    assert any(size == 0 for row in hashed for size in row)  # and some slice is empty
    balanced = _loads_after(ISSUE_EXAMPLE, 4, 3)[-1]
    assert _within_bound(balanced, 50)
    assert all(size > 0 for row in balanced for size in row)


@given(
    st.lists(
        st.dictionaries(
            st.text("abcdefgh", min_size=1, max_size=4),
            st.integers(1, 60),
            min_size=1,
            max_size=12,
        ),
        min_size=1,
        max_size=8,
    ),
    st.integers(1, 5),
    st.integers(1, 4),
)
@settings(max_examples=300, deadline=None)
def test_balanced_placement_keeps_every_slice_within_the_bound(
    batches: list[dict[str, int]], n_shards: int, n_slices: int
) -> None:
    seen: set[str] = set()
    stream = []  # each subject arrives once, whole, in one batch
    for batch in batches:
        stream.append({s: n for s, n in batch.items() if s not in seen})
        seen |= batch.keys()
    largest = 0
    for batch, loads in zip(stream, _loads_after(stream, n_shards, n_slices), strict=True):
        largest = max([largest, *batch.values()])
        assert _within_bound(loads, largest), (loads, largest)


def test_balanced_placement_is_deterministic_and_ignores_the_batchs_order() -> None:
    sizes = {f"subject-{i}": (i * 7) % 13 + 1 for i in range(30)}
    loads = [[3, 0, 5], [1, 1, 0]]
    first = place_subjects("m", sizes, loads, 2, 3)
    again = place_subjects("m", dict(reversed(sizes.items())), loads, 2, 3)
    assert first == again
    assert loads == [[3, 0, 5], [1, 1, 0]]  # the caller's loads are not changed


def test_a_tie_goes_to_the_first_least_loaded_slice_from_the_hashed_one() -> None:
    # An empty model: the first subject goes where its hash says (as before).
    empty = [[0] * 3 for _ in range(4)]
    assert place_subjects("m", {"bob": 5}, empty, 4, 3) == {
        "bob": place("m", "", "bob", 4, 3, "subject")
    }
    # One slice less loaded than the rest: it wins, wherever the hash points.
    loads = [[9, 9, 9], [9, 2, 9], [9, 9, 9], [9, 9, 9]]
    assert place_subjects("m", {"bob": 5}, loads, 4, 3) == {"bob": (1, 1)}
    # The larger subject is placed first, on the emptiest slice.
    two = place_subjects("m", {"small": 1, "large": 10}, [[0, 4]], 1, 2)
    assert two == {"large": (0, 0), "small": (0, 1)}
