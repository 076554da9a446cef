"""Properties of the lineage rules (``service.lineage.rules``), on a pure model of a lineage.

Random histories of full trainings, exact retrains, approximate passes and deletions, with
several runs in flight at once (so deletions, other retrains and passes land while a run
trains), are played on plain rows; after every step the rules must keep what DESIGN.md's lineage
model promises:

- a served prefix (any valid prefix) holds only active layers whose recorded slice versions are
  all current, so no exact layer in it was trained on a sample deleted since;
- a valid prefix is a parent-linked chain of stages 1..n and cannot be extended;
- at most one layer is active at each stage of a sequence, and superseded, discarded and
  invalidated layers are never served nor revived;
- each shard serves a longest valid prefix, ties to the one trained last, whatever the order of
  the prefixes; a shard without one drops out;
- an activation activates a bottom-up run of current, linked layers and discards the rest;
  when something activates it supersedes exactly what was active at those stages; an
  approximate pass never replaces an active layer, and is served whole or not at all; the
  generation moves iff something activated; a retrain that no deletion raced restores the full
  prefix;
- `completed` means nothing derived from the deleted data remains: once a deletion completes
  (at any point of the history, its retrains landed or not), no active layer is an approximate
  layer whose weights derive from its sample (the test follows the samples each pass's output
  derives from: the chain it edited, transitively, and the data it read), then or later.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import LineageError
from service.lineage.rules import (
    ActivationPlan,
    LayerRow,
    LayerState,
    Prefix,
    SequenceRow,
    choose_served,
    is_current,
    plan_activation,
    plan_withdrawal,
    valid_prefix,
    valid_prefixes,
)

ALLOWED = {  # a layer's life: training -> active | discarded; active -> superseded | invalidated
    (LayerState.training, LayerState.active),
    (LayerState.training, LayerState.discarded),
    (LayerState.active, LayerState.superseded),
    (LayerState.active, LayerState.invalidated),
    (LayerState.active, LayerState.discarded),  # withdrawn: a completed deletion's data
    (LayerState.invalidated, LayerState.discarded),
}


@dataclass
class Run:
    """A (re)train or an approximate pass in flight: its layers, state ``training``."""

    layers: list[LayerRow]
    approximate: bool
    raced: bool = False  # a deletion touched one of its slices after it read its data


@dataclass(frozen=True)
class Deletion:
    """One sample leaving one slice, and the layers it invalidated."""

    sample: int
    slice_id: uuid.UUID
    shard_index: int
    invalidated: frozenset[int]


@dataclass
class Lineage:
    """A model's lineage as plain rows, and what the test knows besides (the samples)."""

    n_shards: int
    n_slices: int
    sequences: list[SequenceRow]
    orders: dict[uuid.UUID, list[uuid.UUID]]  # per sequence, its slices π1..πL
    versions: dict[uuid.UUID, int]
    live: dict[uuid.UUID, set[int]]  # per slice, its samples not deleted
    layers: dict[int, LayerRow] = field(default_factory=dict)
    saw: dict[int, frozenset[int]] = field(default_factory=dict)  # exact layers' samples
    # Approximate layers: every sample their weights derive from (the chain they were edited
    # from, transitively, and the data their pass read).
    derived: dict[int, frozenset[int]] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    deleted: set[int] = field(default_factory=set)
    pending: list[Deletion] = field(default_factory=list)
    completed: list[Deletion] = field(default_factory=list)
    next_id: int = 1

    @classmethod
    def create(cls, n_shards: int, n_slices: int, orders: list[list[int]]) -> Lineage:
        slices = {
            (shard, i): uuid.UUID(int=(1 << 64) + 16 * shard + i)
            for shard in range(n_shards)
            for i in range(n_slices)
        }
        sequences = [
            SequenceRow(uuid.UUID(int=(2 << 64) + 16 * shard + k), shard, k)
            for shard in range(n_shards)
            for k in range(len(orders))
        ]
        return cls(
            n_shards,
            n_slices,
            sequences,
            {s.id: [slices[s.shard_index, i] for i in orders[s.index]] for s in sequences},
            dict.fromkeys(slices.values(), 0),
            {slice_id: {3 * n + j for j in range(3)} for n, slice_id in enumerate(slices.values())},
        )

    def prefix(self, sequence: SequenceRow) -> Prefix:
        return valid_prefix(sequence, self.layers.values(), self.versions)

    def prefixes(self) -> list[Prefix]:
        return valid_prefixes(self.sequences, self.layers.values(), self.versions)

    def train(
        self, sequence: SequenceRow, start: int, *, sources: tuple[int, ...] | None = None
    ) -> Run:
        """Record stages start..L on the current data, each from the one below (stage start-1
        of the valid prefix); not yet activated. With ``sources`` (the chain it edits) it is an
        approximate pass's output."""
        prefix = self.prefix(sequence)
        assert 1 <= start <= prefix.length + 1
        parent = prefix.layer_ids[start - 2] if start > 1 else None
        approximate = sources is not None
        run = Run([], approximate)
        read = frozenset().union(*(self.live[s] for s in self.orders[sequence.id]))
        derived = read.union(*(self.weights_of(i) for i in sources or ()))
        for position in range(start, self.n_slices + 1):
            seen = self.orders[sequence.id][:position]
            layer = LayerRow(
                self.next_id,
                sequence.id,
                position,
                parent,
                LayerState.training,
                approximate,
                {slice_id: self.versions[slice_id] for slice_id in seen},
                frozenset(sources or ()),
            )
            self.next_id += 1
            self.layers[layer.id] = layer
            if approximate:  # a pass edits a layer that saw the deleted samples
                self.derived[layer.id] = derived
            else:
                self.saw[layer.id] = frozenset().union(*(self.live[s] for s in seen))
            run.layers.append(layer)
            parent = layer.id
        self.runs.append(run)
        return run

    def weights_of(self, layer_id: int) -> frozenset[int]:
        """The samples a layer's weights derive from."""
        return self.saw.get(layer_id) or self.derived.get(layer_id, frozenset())

    def approximate(self, sequence: SequenceRow) -> Run | None:
        """A pending deletion's pass, as ``plan_pass`` plans it: it edits the invalidated
        stages above the sequence's valid prefix, parent-linked up to L, if that deletion alone
        moved their slices since they were trained; None when there is no such chain."""
        prefix = self.prefix(sequence)
        parent = prefix.layer_ids[-1] if prefix.layer_ids else None
        edited: list[LayerRow] = []
        for position in range(prefix.length + 1, self.n_slices + 1):
            below = [
                layer
                for layer in self.layers.values()
                if (layer.sequence_id, layer.position, layer.parent_layer_id)
                == (sequence.id, position, parent)
                and layer.state is LayerState.invalidated
            ]
            if not below:
                return None
            edited.append(max(below, key=lambda layer: layer.id))
            parent = edited[-1].id
        moved = {
            (slice_id, self.versions[slice_id] - version)
            for layer in edited
            for slice_id, version in layer.versions.items()
            if self.versions[slice_id] != version
        }
        if len(moved) != 1 or next(iter(moved))[1] != 1:
            return None  # another deletion also touched them: the exact retrain covers both
        (slice_id, _), *_ = moved
        if not any(d.slice_id == slice_id for d in self.pending):
            return None  # completed: its payloads are gone, the pass reads none
        chain = (*prefix.layer_ids, *(layer.id for layer in edited))
        return self.train(sequence, prefix.length + 1, sources=chain) if edited else None

    def complete(self, pick: int) -> None:
        """A deletion completes (whenever: the rules must not depend on its retrains): the
        rule withdraws what may derive from its data."""
        if not self.pending:
            return
        deletion = self.pending.pop(pick % len(self.pending))
        sequence_ids = {s.id for s in self.sequences if s.shard_index == deletion.shard_index}
        withdraw = plan_withdrawal(self.layers.values(), sequence_ids, deletion.invalidated)
        assert len(set(withdraw)) == len(withdraw)
        for layer_id in withdraw:
            assert self.layers[layer_id].sequence_id in sequence_ids, "another shard's layer"
            self._move(layer_id, LayerState.discarded)
        self.completed.append(deletion)

    def delete(self, slice_id: uuid.UUID, pick: int) -> None:
        """A deletion: one sample leaves the slice, its version moves, and every active layer
        that recorded it is invalidated, in one step (what ``deactivate`` does)."""
        if not self.live[slice_id]:
            return
        sample = sorted(self.live[slice_id])[pick % len(self.live[slice_id])]
        self.live[slice_id].discard(sample)
        self.deleted.add(sample)
        self.versions[slice_id] += 1
        invalidated = set()
        for layer in list(self.layers.values()):
            if layer.state is LayerState.active and slice_id in layer.versions:
                self._move(layer.id, LayerState.invalidated)
                invalidated.add(layer.id)
        shard = next(s.shard_index for s in self.sequences if slice_id in self.orders[s.id])
        self.pending.append(Deletion(sample, slice_id, shard, frozenset(invalidated)))
        for run in self.runs:
            run.raced |= any(slice_id in layer.versions for layer in run.layers)

    def activate(self, runs: list[Run]) -> ActivationPlan:
        """Ask the rule, check the plan against what an activation must do, apply it."""
        for run in runs:
            self.runs.remove(run)
        batch = [layer for run in runs for layer in run.layers]
        before = dict(self.layers)
        plan = plan_activation(batch, self.layers.values(), self.versions)
        _check_plan(self, runs, plan)
        for layer_id in plan.supersede:
            self._move(layer_id, LayerState.superseded)
        for layer_id in plan.activate:
            self._move(layer_id, LayerState.active)
        for layer_id in plan.discard:
            self._move(layer_id, LayerState.discarded)
        changed = {i for i, layer in self.layers.items() if layer.state is not before[i].state}
        assert changed == {*plan.activate, *plan.discard, *plan.supersede}
        return plan

    def _move(self, layer_id: int, state: LayerState) -> None:
        layer = self.layers[layer_id]
        assert (layer.state, state) in ALLOWED, f"layer {layer_id}: {layer.state} -> {state}"
        self.layers[layer_id] = replace(layer, state=state)


def _check_plan(lineage: Lineage, runs: list[Run], plan: ActivationPlan) -> None:
    batch = [layer for run in runs for layer in run.layers]
    assert sorted([*plan.activate, *plan.discard]) == sorted(layer.id for layer in batch)
    assert not set(plan.activate) & set(plan.discard)
    assert len(set(plan.supersede)) == len(plan.supersede)
    assert plan.bumps_generation == bool(plan.activate)
    activated = set(plan.activate)
    for run in runs:
        ids = [layer.id for layer in run.layers]
        first = run.layers[0]
        sequence_id, start = first.sequence_id, first.position
        kept = [i for i in ids if i in activated]
        assert kept == ids[: len(kept)], "only a bottom-up run of stages activates"
        for layer in run.layers[: len(kept)]:
            assert is_current(layer, lineage.versions), "a stale layer would be served"
        stale = [n for n, layer in enumerate(run.layers) if not is_current(layer, lineage.versions)]
        if stale:
            assert len(kept) <= stale[0], "nothing at or above a stale stage activates"
        old = {
            layer.id
            for layer in lineage.layers.values()
            if layer.sequence_id == sequence_id
            and layer.position >= start
            and layer.state is LayerState.active
        }
        superseded = {i for i in plan.supersede if lineage.layers[i].sequence_id == sequence_id}
        assert superseded == (old if kept else set()), "supersede exactly what was served there"
        if run.approximate and old:
            assert not kept, "an approximate pass replaced an active layer"
        withdrawn = any(
            lineage.layers[source].state is LayerState.discarded
            for layer in run.layers
            for source in layer.sources
        )
        if run.approximate:
            assert kept in ([], ids), "an approximate pass is served whole or not at all"
            if run.raced or withdrawn:
                assert not kept, "a pass served what derives from data deleted since it read"
        parent = lineage.layers.get(first.parent_layer_id or 0)
        parent_live = start == 1 or (
            parent is not None
            and parent.state is LayerState.active
            and is_current(parent, lineage.versions)
        )
        if not parent_live:
            assert not kept, "a run activated on a parent that is no longer served"
        if parent_live and not run.raced and not (run.approximate and (old or withdrawn)):
            assert kept == ids, "a retrain that no deletion raced must be served whole"


def _check_invariant(lineage: Lineage) -> None:
    for deletion in lineage.completed:
        for layer in lineage.layers.values():
            if layer.state is LayerState.active and layer.approximate:
                assert deletion.sample not in lineage.derived[layer.id], (
                    f"approximate layer {layer.id} derives from the sample of a completed "
                    "deletion and is still served"
                )
    active = Counter(
        (layer.sequence_id, layer.position)
        for layer in lineage.layers.values()
        if layer.state is LayerState.active
    )
    assert all(n == 1 for n in active.values()), "two active layers at one stage"
    for layer in lineage.layers.values():
        if layer.state is LayerState.active:
            assert is_current(layer, lineage.versions), f"active layer {layer.id} is stale"

    prefixes = lineage.prefixes()
    assert [p.sequence_id for p in prefixes] == [s.id for s in lineage.sequences]
    of_sequence: dict[uuid.UUID, list[LayerRow]] = defaultdict(list)
    for layer in lineage.layers.values():
        of_sequence[layer.sequence_id].append(layer)
    for sequence, prefix in zip(lineage.sequences, prefixes, strict=True):
        layers = of_sequence[sequence.id]
        assert (prefix.shard_index, prefix.sequence_index) == (sequence.shard_index, sequence.index)
        chain = [lineage.layers[i] for i in prefix.layer_ids]
        parent = None
        for position, layer in enumerate(chain, start=1):
            assert (layer.sequence_id, layer.position, layer.parent_layer_id) == (
                sequence.id,
                position,
                parent,
            ), "a prefix is the parent-linked chain of stages 1..n"
            assert layer.state is LayerState.active, f"a {layer.state} layer in a prefix"
            assert is_current(layer, lineage.versions), "a prefix layer saw an old version"
            if not layer.approximate:
                assert not lineage.saw[layer.id] & lineage.deleted, "served deleted data"
            parent = layer.id
        assert set(prefix.layer_ids) == {
            layer.id for layer in layers if layer.state is LayerState.active
        }, "an active layer outside the valid prefix"
        exact = [not layer.approximate for layer in chain]
        assert prefix.exact == [*exact, False].index(False), "exact: the leading exact stages"
        assert not any(
            layer.position == prefix.length + 1
            and layer.parent_layer_id == parent
            and layer.state is LayerState.active
            and is_current(layer, lineage.versions)
            for layer in layers
        ), "a longer valid prefix exists"

    choice = choose_served(prefixes, lineage.n_shards)
    _check_choice(prefixes, lineage.n_shards, choice)
    for served in choice.values():
        for layer_id in served.layer_ids if served else ():
            state = lineage.layers[layer_id].state
            assert state is LayerState.active, f"a {state} layer is served"


def _check_choice(prefixes: list[Prefix], n_shards: int, choice: dict[int, Prefix | None]) -> None:
    assert set(choice) == set(range(n_shards))
    for shard in range(n_shards):
        candidates = [p for p in prefixes if p.shard_index == shard and p.length]
        served = choice[shard]
        if not candidates:
            assert served is None, "a shard without a valid layer must drop out"
            continue
        assert served is not None and served in candidates
        longest = max(p.length for p in candidates)
        assert served.length == longest, "not the longest valid prefix"
        newest = max(max(p.layer_ids) for p in candidates if p.length == longest)
        assert max(served.layer_ids) == newest, "a tie went to a prefix trained earlier"


OPS = [
    "full",
    "retrain",
    "approximate",
    "delete",
    "complete",
    "finish",
    "finish_two",
    "finish_all",
]


@st.composite
def histories(draw: st.DrawFn) -> tuple[int, int, list[list[int]], list[tuple[str, int, int]]]:
    n_shards = draw(st.integers(1, 2))
    n_slices = draw(st.integers(1, 4))
    orders = draw(st.lists(st.permutations(range(n_slices)), min_size=1, max_size=3))
    ops = draw(
        st.lists(
            st.tuples(st.sampled_from(OPS), st.integers(0, 63), st.integers(0, 63)), max_size=30
        )
    )
    return n_shards, n_slices, orders, ops


def _step(lineage: Lineage, op: str, a: int, b: int) -> None:
    sequence = lineage.sequences[a % len(lineage.sequences)]
    if op == "delete":
        slices = list(lineage.versions)
        lineage.delete(slices[a % len(slices)], b)
    elif op == "full":
        lineage.train(sequence, 1)
    elif op == "retrain":  # from the first stage that is not valid and exact
        exact = lineage.prefix(sequence).exact
        lineage.train(sequence, exact + 1 if exact < lineage.n_slices else 1)
    elif op == "approximate":  # edits the invalidated stages above the valid prefix
        lineage.approximate(sequence)
    elif op == "complete":
        lineage.complete(b)
    elif lineage.runs:
        runs = lineage.runs
        if op == "finish":
            lineage.activate([runs[b % len(runs)]])
        else:  # several runs at once, at most one per sequence
            picked: dict[uuid.UUID, Run] = {}
            for run in runs[b % len(runs) :] + runs[: b % len(runs)]:
                picked.setdefault(run.layers[0].sequence_id, run)
            batch = list(picked.values())
            lineage.activate(batch if op == "finish_all" else batch[:2])


@settings(max_examples=1000, deadline=None)
@given(histories())
def test_the_rules_keep_the_lineage_invariant_through_any_history(
    history: tuple[int, int, list[list[int]], list[tuple[str, int, int]]],
) -> None:
    n_shards, n_slices, orders, ops = history
    lineage = Lineage.create(n_shards, n_slices, orders)
    for sequence in lineage.sequences:
        plan = lineage.activate([lineage.train(sequence, 1)])
        assert len(plan.activate) == n_slices
    _check_invariant(lineage)
    for op, a, b in ops:
        _step(lineage, op, a, b)
        _check_invariant(lineage)
    for run in list(lineage.runs):  # whatever is still in flight lands, in some order
        lineage.activate([run])
        _check_invariant(lineage)


def _played(ops: list[tuple[str, int, int]]) -> Lineage:
    """One shard of two slices in both orders, trained, then ``ops``, checked at every step."""
    lineage = Lineage.create(1, 2, [[0, 1], [1, 0]])
    for sequence in lineage.sequences:
        lineage.activate([lineage.train(sequence, 1)])
    for op, a, b in ops:
        _step(lineage, op, a, b)
        _check_invariant(lineage)
    return lineage


def test_completion_withdraws_the_passes_of_the_orders_it_did_not_wait_for() -> None:
    """The issue's history: a pass edits both orders, the served order's exact retrain lands
    and the deletion completes while the other order's retrain is parked."""
    lineage = _played(
        [
            ("delete", 0, 0),  # slice 0: order 0 is cut from stage 1, order 1 from stage 2
            ("approximate", 0, 0),
            ("approximate", 1, 0),
            ("finish_all", 0, 0),  # both orders at full depth again, approximately
            ("retrain", 1, 0),  # the served order's exact retrain
            ("finish", 0, 0),
            ("complete", 0, 0),
        ]
    )
    (order0, order1) = lineage.prefixes()
    assert (order0.length, order0.exact) == (0, 0), "order 0 falls back to its exact prefix"
    assert (order1.length, order1.exact) == (2, 2)


def test_completion_withdraws_what_a_later_pass_would_edit() -> None:
    """A second deletion invalidated the first one's pass output; once the first completes, the
    second's pass may not edit it (it derives from the first one's sample)."""
    lineage = _played(
        [
            ("delete", 0, 0),
            ("approximate", 0, 0),
            ("finish", 0, 0),
            ("delete", 0, 0),  # slice 0 again: the pass's output is invalidated
            ("complete", 0, 0),
            ("approximate", 0, 0),
            ("finish_all", 0, 0),
        ]
    )
    assert not any(
        layer.approximate and layer.state is LayerState.active for layer in lineage.layers.values()
    )


@st.composite
def shard_prefixes(draw: st.DrawFn) -> tuple[int, list[Prefix]]:
    n_shards = draw(st.integers(1, 3))
    shape = draw(st.lists(st.tuples(st.integers(0, n_shards - 1), st.integers(0, 4)), max_size=8))
    ids = iter(draw(st.permutations(range(1, 1 + sum(n for _, n in shape)))))
    prefixes = []
    for k, (shard, length) in enumerate(shape):
        layer_ids = tuple(next(ids) for _ in range(length))
        exact = draw(st.integers(0, length))
        prefixes.append(Prefix(shard, uuid.UUID(int=k), k, layer_ids, exact))
    return n_shards, prefixes


@settings(max_examples=500, deadline=None)
@given(shard_prefixes(), st.randoms(use_true_random=False))
def test_the_serving_choice_is_the_longest_prefix_ties_to_the_newest_in_any_order(
    case: tuple[int, list[Prefix]], rnd: Random
) -> None:
    n_shards, prefixes = case
    choice = choose_served(prefixes, n_shards)
    _check_choice(prefixes, n_shards, choice)
    shuffled = list(prefixes)
    rnd.shuffle(shuffled)
    assert choose_served(shuffled, n_shards) == choice, "the choice depends on the order"


def _row(layer_id: int, position: int, parent: int | None, state: LayerState) -> LayerRow:
    return LayerRow(layer_id, uuid.UUID(int=1), position, parent, state, False, {})


def test_only_training_layers_can_be_activated() -> None:
    with pytest.raises(LineageError):
        plan_activation([_row(1, 1, None, LayerState.active)], [], {})


def test_a_sequence_activates_consecutive_stages_only() -> None:
    run = [_row(1, 1, None, LayerState.training), _row(2, 3, 1, LayerState.training)]
    with pytest.raises(LineageError):
        plan_activation(run, [], {})
