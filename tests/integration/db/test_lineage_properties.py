"""Property: after any sequence of trainings, retrains and deletions, the lineage invariant
holds, checked against a brute-force recomputation from the raw rows.

- a layer is valid (for the repository) iff every slice version it recorded is current;
- an ``active`` layer is valid, an ``invalidated`` one is not;
- no valid layer was trained on a deleted sample;
- each shard serves a longest valid prefix (None when no sequence has one).
"""

from __future__ import annotations

import uuid
from collections import defaultdict

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from service.db.models import LayerSliceVersion, LayerState, Model, Sample, Shard, Slice
from service.db.repositories import (
    LineageRepository,
    ModelRepository,
    NewSample,
    SampleRepository,
    TenantRepository,
)
from tests.conftest import make_model
from tests.lineage_sim import SimTrainer

Op = tuple[str, int, int]
ops = st.lists(
    st.tuples(
        st.sampled_from(["retrain", "full", "delete", "race"]),
        st.integers(0, 50),
        st.integers(0, 50),
    ),
    max_size=14,
)


def _check_invariant(session: Session, model: Model, trainer: SimTrainer) -> None:
    lineage = LineageRepository.from_session(session)
    session.expire_all()
    versions = dict(
        session.execute(
            sa.select(Slice.id, Slice.version)
            .join(Shard, Shard.id == Slice.shard_id)
            .where(Shard.model_id == model.id)
        ).all()
    )
    recorded: dict[int, dict[uuid.UUID, int]] = defaultdict(dict)
    for layer_id, slice_id, version in session.execute(
        sa.select(LayerSliceVersion.layer_id, LayerSliceVersion.slice_id, LayerSliceVersion.version)
    ).all():
        recorded[layer_id][slice_id] = version
    layers = lineage.layers(model.id)
    deleted = set(
        session.scalars(sa.select(Sample.id).where(Sample.model_id == model.id, Sample.deleted))
    )
    stale = lineage.stale_layer_ids(model.id)

    valid: dict[int, bool] = {}
    for layer in layers:
        is_valid = all(versions[s] == v for s, v in recorded[layer.id].items())
        valid[layer.id] = is_valid
        assert (layer.id not in stale) == is_valid
        if layer.state is LayerState.active:
            assert is_valid, f"active layer {layer.id} saw an old slice version"
        if layer.state is LayerState.invalidated:
            assert not is_valid
        if is_valid:
            assert not (trainer.trained_on[layer.id] & deleted), "a valid layer saw deleted data"

    # Brute force: per sequence, the chain of active valid layers from position 1.
    active = {
        (layer.sequence_id, layer.position): layer
        for layer in layers
        if layer.state is LayerState.active and valid[layer.id]
    }
    best: dict[int, int] = defaultdict(int)
    chains: dict[uuid.UUID, tuple[int, ...]] = {}
    shard_of = {}
    for sequence in ModelRepository.from_session(session).sequences(model.id):
        shard = session.get(Shard, sequence.shard_id)
        assert shard is not None
        shard_of[sequence.id] = shard.index
        chain: list[int] = []
        while (link := active.get((sequence.id, len(chain) + 1))) is not None and (
            link.parent_layer_id == (chain[-1] if chain else None)
        ):
            chain.append(link.id)
        chains[sequence.id] = tuple(chain)
        best[shard.index] = max(best[shard.index], len(chain))

    for shard_index, prefix in lineage.serving_choice(model.id).items():
        if best[shard_index] == 0:
            assert prefix is None
        else:
            assert prefix is not None
            assert prefix.length == best[shard_index]
            assert prefix.layer_ids == chains[prefix.sequence_id]
            assert shard_of[prefix.sequence_id] == shard_index


def _apply(session: Session, model: Model, trainer: SimTrainer, op: Op) -> None:
    kind, a, b = op
    lineage = LineageRepository.from_session(session)
    sequences = ModelRepository.from_session(session).sequences(model.id)
    sequence = sequences[a % len(sequences)]
    samples = session.scalars(
        sa.select(Sample).where(Sample.model_id == model.id).order_by(Sample.id)
    ).all()
    victim = samples[b % len(samples)]
    if kind == "delete":
        lineage.deactivate_samples(model.id, [victim.id])
    elif kind == "full":
        trainer.train_and_activate(sequence)
    elif kind == "retrain":
        prefix = next(p for p in lineage.prefixes(model.id) if p.sequence_id == sequence.id)
        if prefix.length < model.n_slices:
            trainer.train_and_activate(sequence, prefix.length + 1)
    else:  # "race": a deletion lands between reading the data and activating
        prefix = next(p for p in lineage.prefixes(model.id) if p.sequence_id == sequence.id)
        start = prefix.length + 1 if prefix.length < model.n_slices else 1
        in_flight = trainer.train(sequence, start)
        lineage.deactivate_samples(model.id, [victim.id])
        lineage.activate(model.id, in_flight)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    n_shards=st.integers(1, 2),
    n_slices=st.integers(1, 3),
    budget=st.integers(1, 3),
    operations=ops,
)
def test_lineage_invariant_holds_after_any_history(
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
        trainer.train_and_activate(sequence)
    _check_invariant(session, model, trainer)
    for op in operations:
        _apply(session, model, trainer, op)
        _check_invariant(session, model, trainer)
