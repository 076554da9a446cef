"""The lineage rules: pure functions over plain rows, no database and no session.

A layer is valid iff every slice version it recorded equals the slice's current version
(:func:`is_current`). A sequence's usable model is its longest valid prefix: active, current
layers at stages 1..n, each the child of the one below (:func:`valid_prefix`). Each shard serves
the sequence with the longest valid prefix, ties to the one trained last (:func:`choose_served`).
A retrain's layers are activated only while the versions they saw are current, superseding what
was active at their stages; the rest are discarded (:func:`plan_activation`). An approximate
pass's layers are activated whole or not at all, and never once a layer they were edited from is
withdrawn. A deletion that completes withdraws what may derive from its data: every approximate
layer of its shards and the layers it invalidated (:func:`plan_withdrawal`).

``LineageRepository`` loads the rows, calls these rules and applies their result with set-based
SQL; the unit property tests (``tests/unit/test_lineage_rules.py``) check the rules themselves.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from service.errors import LineageError


class LayerState(StrEnum):
    training = "training"  # written by a (re)train job, not yet activated
    active = "active"  # valid and servable
    invalidated = "invalidated"  # a slice it saw lost a sample
    superseded = "superseded"  # replaced by a newer layer at the same position
    # A retrain result whose slice versions moved before activation, or a layer withdrawn when a
    # deletion completed (an approximate layer that may derive from its data, or a layer it
    # invalidated: nothing is served from or edited from it again).
    discarded = "discarded"


@dataclass(frozen=True)
class SequenceRow:
    """One slice sequence (order) of a shard."""

    id: uuid.UUID
    shard_index: int
    index: int


@dataclass(frozen=True)
class LayerRow:
    """One trained stage of a sequence and the slice versions it was trained on."""

    id: int
    sequence_id: uuid.UUID
    position: int  # 1-based stage
    parent_layer_id: int | None
    state: LayerState
    approximate: bool
    versions: Mapping[uuid.UUID, int] = field(default_factory=dict, hash=False)  # recorded
    # An approximate layer's: the chain its pass edited (the valid prefix and the invalidated
    # stages above it), whose weights it derives from. Empty for an exact layer.
    sources: frozenset[int] = field(default_factory=frozenset, hash=False)


@dataclass(frozen=True)
class Prefix:
    """The valid prefix of one sequence: its active, current layers at positions 1..length."""

    shard_index: int
    sequence_id: uuid.UUID
    sequence_index: int
    layer_ids: tuple[int, ...]
    exact: int  # leading stages that are exact (not approximate): where a retrain starts from

    @property
    def length(self) -> int:
        return len(self.layer_ids)

    @property
    def approximate_stages(self) -> int:
        """The stages above the exact ones: an approximate pass's output, served meanwhile."""
        return self.length - self.exact


@dataclass(frozen=True)
class Activation:
    activated_layer_ids: list[int] = field(default_factory=list)
    discarded_layer_ids: list[int] = field(default_factory=list)  # stale: versions moved
    superseded_layer_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ActivationPlan:
    """What activating a retrain's layers changes: layer ids, in the order they are reported
    (sequences as they first appear in the run, stages bottom-up)."""

    activate: tuple[int, ...] = ()  # training -> active (with an activation time)
    discard: tuple[int, ...] = ()  # training -> discarded
    supersede: tuple[int, ...] = ()  # active -> superseded (before any activation)

    @property
    def bumps_generation(self) -> bool:
        """The model's ``serving_generation`` moves iff something new is served."""
        return bool(self.activate)

    def as_activation(self) -> Activation:
        return Activation(list(self.activate), list(self.discard), list(self.supersede))


def is_current(layer: LayerRow, versions: Mapping[uuid.UUID, int]) -> bool:
    """The lineage invariant: a layer is valid iff every slice version it recorded is the
    slice's current version (``versions``: current version by slice id)."""
    return all(versions.get(slice_id) == version for slice_id, version in layer.versions.items())


def valid_prefix(
    sequence: SequenceRow, layers: Iterable[LayerRow], versions: Mapping[uuid.UUID, int]
) -> Prefix:
    """The longest valid prefix of ``sequence`` (possibly empty): from stage 1 up, the active,
    current layer of each stage whose parent is the layer below, until a stage has none; and how
    many of its leading stages are exact. ``layers`` may hold any layers of any sequences."""
    live: dict[int, list[LayerRow]] = defaultdict(list)
    for layer in layers:
        if (
            layer.sequence_id == sequence.id
            and layer.state is LayerState.active
            and is_current(layer, versions)
        ):
            live[layer.position].append(layer)
    chain: list[int] = []
    exact = 0
    while True:
        parent = chain[-1] if chain else None
        children = [layer for layer in live[len(chain) + 1] if layer.parent_layer_id == parent]
        if not children:
            break
        layer = max(children, key=lambda child: child.id)  # one at most: one active per stage
        if not layer.approximate and exact == len(chain):
            exact += 1
        chain.append(layer.id)
    return Prefix(sequence.shard_index, sequence.id, sequence.index, tuple(chain), exact)


def valid_prefixes(
    sequences: Iterable[SequenceRow], layers: Iterable[LayerRow], versions: Mapping[uuid.UUID, int]
) -> list[Prefix]:
    """:func:`valid_prefix` of each sequence, in the order given."""
    by_sequence: dict[uuid.UUID, list[LayerRow]] = defaultdict(list)
    for layer in layers:
        by_sequence[layer.sequence_id].append(layer)
    return [valid_prefix(s, by_sequence.get(s.id, []), versions) for s in sequences]


def choose_served(prefixes: Iterable[Prefix], n_shards: int) -> dict[int, Prefix | None]:
    """The serving rule: per shard index, the longest valid prefix (ties to the one trained
    last, the highest layer id), or None when no sequence of the shard has a valid layer."""
    choice: dict[int, Prefix | None] = dict.fromkeys(range(n_shards))
    for prefix in prefixes:
        if prefix.length == 0:
            continue
        best = choice[prefix.shard_index]
        if best is None or (prefix.length, max(prefix.layer_ids)) > (
            best.length,
            max(best.layer_ids),
        ):
            choice[prefix.shard_index] = prefix
    return choice


def served_shares(choice: Mapping[int, Prefix | None], n_slices: int) -> tuple[float, float]:
    """Of a serving choice: the share of shards that answer, and the mean served depth / L."""
    lengths = [p.length if p is not None else 0 for p in choice.values()]
    return sum(1 for n in lengths if n) / len(lengths), sum(lengths) / (len(lengths) * n_slices)


def plan_activation(
    run: Sequence[LayerRow], layers: Iterable[LayerRow], versions: Mapping[uuid.UUID, int]
) -> ActivationPlan:
    """Serve newly trained layers, if the slice versions they saw are still current.

    ``run``: the layers to activate (state ``training``); ``layers``: the layers of their
    sequences now (at least the active ones: any other parent is not live) and the ``sources``
    of an approximate run; ``versions``: the current version of every slice they recorded.

    For each sequence the layers must form a contiguous run of stages k..j whose first stage
    descends from the active, current stage k-1 (no parent at k = 1). They are activated in
    order until the first stale one (or a broken chain); that one and the rest are discarded.
    The active layers at stages >= k of the sequence are superseded when at least one layer
    activates. An approximate run is activated whole or discarded whole: discarded when any of
    its layers is stale (a deletion since its pass read the data, which it then derives from),
    when one of its ``sources`` is withdrawn (``discarded``, or missing from ``layers``: a
    completed deletion's data), or when any layer is active at a stage >= k (an exact retrain
    landed first). Raises LineageError for a layer not in state ``training`` or a sequence's
    layers that are not consecutive stages.
    """
    if any(layer.state is not LayerState.training for layer in run):
        raise LineageError("only layers in state `training` can be activated")
    runs: dict[uuid.UUID, list[LayerRow]] = {}
    for layer in run:
        runs.setdefault(layer.sequence_id, []).append(layer)
    new = {layer.id for layer in run}
    current = {layer.id: layer for layer in layers if layer.id not in new}

    activate: list[int] = []
    discard: list[int] = []
    supersede: list[int] = []
    for sequence_id, stages in runs.items():
        stages = sorted(stages, key=lambda layer: layer.position)
        first = stages[0].position
        if [layer.position for layer in stages] != list(range(first, first + len(stages))):
            raise LineageError("layers of one sequence must be consecutive stages")
        good = 0
        if _is_live_parent(sequence_id, first, stages[0].parent_layer_id, current, versions):
            previous = stages[0].parent_layer_id
            for layer in stages:
                if not is_current(layer, versions) or layer.parent_layer_id != previous:
                    break
                previous = layer.id
                good += 1
        old = sorted(
            (
                layer
                for layer in current.values()
                if layer.sequence_id == sequence_id
                and layer.position >= first
                and layer.state is LayerState.active
            ),
            key=lambda layer: (layer.position, layer.id),
        )
        if stages[0].approximate and (
            old or good < len(stages) or _withdrawn_source(stages, current)
        ):
            good = 0  # never over what is valid (an exact retrain), never in part or withdrawn
        discard.extend(layer.id for layer in stages[good:])
        if good:
            supersede.extend(layer.id for layer in old)
            activate.extend(layer.id for layer in stages[:good])
    return ActivationPlan(tuple(activate), tuple(discard), tuple(supersede))


def _is_live_parent(
    sequence_id: uuid.UUID,
    position: int,
    parent_id: int | None,
    layers: Mapping[int, LayerRow],
    versions: Mapping[uuid.UUID, int],
) -> bool:
    if position == 1:
        return parent_id is None
    parent = layers.get(parent_id) if parent_id is not None else None
    return (
        parent is not None
        and parent.sequence_id == sequence_id
        and parent.state is LayerState.active
        and is_current(parent, versions)
    )


def _withdrawn_source(stages: Sequence[LayerRow], layers: Mapping[int, LayerRow]) -> bool:
    """Whether a layer an approximate run was edited from is withdrawn (or unknown)."""
    sources = {source for layer in stages for source in layer.sources}
    return any(
        source not in layers or layers[source].state is LayerState.discarded for source in sources
    )


def plan_withdrawal(
    layers: Iterable[LayerRow], sequence_ids: Collection[uuid.UUID], invalidated: Collection[int]
) -> tuple[int, ...]:
    """What a deletion's completion withdraws (moves to ``discarded``), by id: in the sequences
    of its shards (``sequence_ids``), every approximate layer that is active or invalidated,
    and every layer it ``invalidated`` that is still in that state.

    An approximate pass dampens what it edits, it does not remove it: its layers derive from
    weights trained on the deleted samples (and from the data its pass read), and so, through
    them, does any later pass edited from them. Passes edit within one shard, so withdrawing
    every approximate layer of the deletion's shards leaves none that derives from its data
    (some of another deletion's may go with them: their orders fall back to their exact
    prefixes until their retrains restore them). Withdrawing the layers it invalidated stops a
    pass still running on them from serving its result (:func:`plan_activation`).
    """
    sequences = set(sequence_ids)
    cut = set(invalidated)
    withdraw = [
        layer.id
        for layer in layers
        if layer.sequence_id in sequences
        and (
            (layer.approximate and layer.state in (LayerState.active, LayerState.invalidated))
            or (layer.id in cut and layer.state is LayerState.invalidated)
        )
    ]
    return tuple(sorted(withdraw))
