"""The repository applies the lineage rules: random histories of trainings, retrains,
approximate passes, deletions and deletions racing a retrain are driven through
``LineageRepository`` on each database, and after every step what it answers (prefixes, serving
choice, exact lengths, stale layers) and every activation it performs (return value, end state,
serving generation) equal ``service.lineage.rules`` on the same rows, read back raw.

The rules themselves are property-tested, fast and on many more histories, in
``tests/unit/test_lineage_rules.py``.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from service.db.models import Layer, LayerSliceVersion, Model, Sample, Shard, Slice, SliceSequence
from service.db.repositories import (
    LineageRepository,
    ModelRepository,
    NewSample,
    SampleRepository,
    TenantRepository,
)
from service.lineage.rules import (
    LayerRow,
    LayerState,
    SequenceRow,
    choose_served,
    is_current,
    plan_activation,
    valid_prefixes,
)
from tests.conftest import make_model
from tests.lineage_sim import SimTrainer

Rows = tuple[list[SequenceRow], list[LayerRow], dict[uuid.UUID, int]]
Op = tuple[str, int, int]
ops = st.lists(
    st.tuples(
        st.sampled_from(["retrain", "full", "approximate", "delete", "race", "two"]),
        st.integers(0, 50),
        st.integers(0, 50),
    ),
    max_size=14,
)


def _rows(session: Session, model: Model) -> Rows:
    """Every sequence, layer (in any state) and slice version of the model, read raw."""
    session.expire_all()
    of_model = Shard.model_id == model.id
    sequences = [
        SequenceRow(sequence_id, shard_index, index)
        for shard_index, sequence_id, index in session.execute(
            sa.select(Shard.index, SliceSequence.id, SliceSequence.index)
            .join(SliceSequence, SliceSequence.shard_id == Shard.id)
            .where(of_model)
            .order_by(Shard.index, SliceSequence.index)
        )
    ]
    layers_of_model = (
        sa.select(Layer.id)
        .join(SliceSequence, SliceSequence.id == Layer.sequence_id)
        .join(Shard, Shard.id == SliceSequence.shard_id)
        .where(of_model)
    )
    recorded: dict[int, dict[uuid.UUID, int]] = defaultdict(dict)
    for layer_id, slice_id, version in session.execute(
        sa.select(
            LayerSliceVersion.layer_id, LayerSliceVersion.slice_id, LayerSliceVersion.version
        ).where(LayerSliceVersion.layer_id.in_(layers_of_model))
    ):
        recorded[layer_id][slice_id] = version
    layers = [
        LayerRow(
            layer.id,
            layer.sequence_id,
            layer.position,
            layer.parent_layer_id,
            layer.state,
            layer.approximate,
            recorded[layer.id],
        )
        for layer in session.scalars(sa.select(Layer).where(Layer.id.in_(layers_of_model)))
    ]
    versions = dict(
        session.execute(
            sa.select(Slice.id, Slice.version)
            .join(Shard, Shard.id == Slice.shard_id)
            .where(of_model)
        ).all()
    )
    return sequences, layers, versions


def _check_reads(session: Session, model: Model, trainer: SimTrainer) -> None:
    """What the repository reads is what the rules say of the raw rows."""
    lineage = LineageRepository.from_session(session)
    sequences, layers, versions = _rows(session, model)
    expected = valid_prefixes(sequences, layers, versions)
    assert lineage.prefixes(model.id) == expected
    assert lineage.serving_choice(model.id) == choose_served(expected, model.n_shards)
    one = len(layers) % len(sequences)  # one sequence per step, a different one as layers come
    assert lineage.prefixes(model.id, sequence_id=sequences[one].id) == [expected[one]]
    assert lineage.exact_length(model.id, sequences[one].id) == expected[one].exact
    shard = ModelRepository.from_session(session).shards(model.id)[0]
    assert lineage.prefixes(model.id, shard_ids=[shard.id]) == [
        p for p in expected if p.shard_index == 0
    ]
    stale = {layer.id for layer in layers if not is_current(layer, versions)}
    assert lineage.stale_layer_ids(model.id) == stale
    assert lineage.invalid_among(layer.id for layer in layers) == stale | {
        layer.id for layer in layers if layer.state is not LayerState.active
    }
    deleted = set(
        session.scalars(sa.select(Sample.id).where(Sample.model_id == model.id, Sample.deleted))
    )
    for layer in layers:
        if layer.state is LayerState.active:
            assert layer.id not in stale, f"active layer {layer.id} saw an old slice version"
        if layer.id not in stale and not layer.approximate:
            assert not trainer.trained_on[layer.id] & deleted, "a valid layer saw deleted data"


def _activate(session: Session, model: Model, layer_ids: Sequence[int]) -> None:
    """The repository's activation is the rules' plan, applied."""
    _, layers, versions = _rows(session, model)
    by_id = {layer.id: layer for layer in layers}
    plan = plan_activation(
        sorted((by_id[i] for i in layer_ids), key=lambda layer: layer.id), layers, versions
    )
    generation = model.serving_generation

    activation = LineageRepository.from_session(session).activate(model.id, layer_ids)

    assert activation == plan.as_activation()
    assert model.serving_generation == generation + plan.bumps_generation
    moved = (
        dict.fromkeys(plan.supersede, LayerState.superseded)
        | dict.fromkeys(plan.activate, LayerState.active)
        | dict.fromkeys(plan.discard, LayerState.discarded)
    )
    _, after, _ = _rows(session, model)
    assert {layer.id: layer.state for layer in after} == {
        layer.id: moved.get(layer.id, layer.state) for layer in layers
    }
    for layer_id in plan.activate:
        assert session.get_one(Layer, layer_id).activated_at is not None


def _apply(session: Session, model: Model, trainer: SimTrainer, op: Op) -> None:
    kind, a, b = op
    lineage = LineageRepository.from_session(session)
    sequences = ModelRepository.from_session(session).sequences(model.id)
    sequence = sequences[a % len(sequences)]
    samples = session.scalars(
        sa.select(Sample).where(Sample.model_id == model.id).order_by(Sample.id)
    ).all()
    victim = samples[b % len(samples)]
    prefix = lineage.prefixes(model.id, sequence_id=sequence.id)[0]
    exact_start = prefix.exact + 1 if prefix.exact < model.n_slices else 1
    if kind == "delete":
        lineage.deactivate_samples(model.id, [victim.id])
    elif kind == "full":
        _activate(session, model, trainer.train(sequence))
    elif kind == "retrain":
        _activate(session, model, trainer.train(sequence, exact_start))
    elif kind == "approximate":
        if prefix.length < model.n_slices:
            _activate(session, model, trainer.train(sequence, prefix.length + 1, approximate=True))
    elif kind == "race":  # a deletion lands between reading the data and activating
        in_flight = trainer.train(sequence, exact_start)
        lineage.deactivate_samples(model.id, [victim.id])
        _activate(session, model, in_flight)
    else:  # two sequences' retrains activated together
        other = sequences[b % len(sequences)]
        first = trainer.train(sequence, exact_start)
        second = (
            trainer.train(other, lineage.prefixes(model.id, sequence_id=other.id)[0].exact + 1)
            if other.id != sequence.id
            and lineage.prefixes(model.id, sequence_id=other.id)[0].exact < model.n_slices
            else []
        )
        _activate(session, model, [*second, *first])


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    n_shards=st.integers(1, 2),
    n_slices=st.integers(1, 3),
    budget=st.integers(1, 3),
    operations=ops,
)
def test_the_repository_applies_the_lineage_rules(
    session: Session, n_shards: int, n_slices: int, budget: int, operations: list[Op]
) -> None:
    tenant = TenantRepository.from_session(session).create(f"t-{uuid.uuid4().hex}")
    orders = [[(i + k) % n_slices for i in range(n_slices)] for k in range(min(budget, n_slices))]
    model = make_model(session, tenant, n_shards=n_shards, n_slices=n_slices, orders=orders)
    SampleRepository.from_session(session).add_many(
        model, [NewSample(f"s{i}", "pos", text="t") for i in range(12)]
    )
    trainer = SimTrainer(session, model.id)
    for sequence in ModelRepository.from_session(session).sequences(model.id):
        _activate(session, model, trainer.train(sequence))
    _check_reads(session, model, trainer)
    for op in operations:
        _apply(session, model, trainer, op)
        _check_reads(session, model, trainer)
