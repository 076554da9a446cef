"""Deactivation, activation and serving choice: the lineage invariant case by case."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.models import Layer, LayerState, Model, Sample, SamplePayload, Slice, Tenant
from service.db.repositories import LineageRepository, ModelRepository, NewSample, SampleRepository
from service.errors import LineageError
from tests.conftest import make_model
from tests.lineage_sim import SimTrainer


def _populate(session: Session, model: Model, n: int = 60) -> list[Sample]:
    rows = [NewSample(f"s{i}", "pos", text=f"t{i}") for i in range(n)]
    return SampleRepository.from_session(session).add_many(model, rows).stored


def _layer(session: Session, layer_id: int) -> Layer:
    layer = session.get(Layer, layer_id)
    assert layer is not None
    return layer


def _sample_in(session: Session, samples: list[Sample], shard: int, slice_index: int) -> Sample:
    models = ModelRepository.from_session(session)
    shard_ids = {m: models.shards(m)[shard].id for m in {s.model_id for s in samples}}
    for sample in samples:
        slice_ = session.get(Slice, sample.slice_id)
        assert slice_ is not None
        if slice_.index == slice_index and shard_ids[sample.model_id] == sample.shard_id:
            return sample
    raise AssertionError("no sample there")


@pytest.fixture
def trained(session: Session, model: Model) -> tuple[Model, list[Sample], SimTrainer]:
    samples = _populate(session, model)
    trainer = SimTrainer(session, model.id)
    for sequence in ModelRepository.from_session(session).sequences(model.id):
        activation = trainer.train_and_activate(sequence)
        assert len(activation.activated_layer_ids) == model.n_slices
    return model, samples, trainer


class TestRecordLayer:
    def test_versions_must_name_exactly_the_prefix_slices(
        self, session: Session, model: Model
    ) -> None:
        lineage = LineageRepository.from_session(session)
        sequence = ModelRepository.from_session(session).sequences(model.id)[0]
        prefix = lineage.prefix_slice_ids(sequence, 2)
        with pytest.raises(LineageError):
            lineage.record_layer(
                sequence=sequence,
                position=1,
                slice_versions=lineage.snapshot(prefix),
                parent_layer_id=None,
            )

    def test_later_stage_needs_its_parent(self, session: Session, model: Model) -> None:
        lineage = LineageRepository.from_session(session)
        sequence = ModelRepository.from_session(session).sequences(model.id)[0]
        with pytest.raises(LineageError):
            lineage.record_layer(
                sequence=sequence,
                position=2,
                slice_versions=lineage.snapshot(lineage.prefix_slice_ids(sequence, 2)),
                parent_layer_id=None,
            )


class TestDeactivation:
    def test_deleting_from_slice_at_position_k_invalidates_stages_k_and_later(
        self, session: Session, trained: tuple[Model, list[Sample], SimTrainer]
    ) -> None:
        model, samples, _ = trained
        lineage = LineageRepository.from_session(session)
        sequences = ModelRepository.from_session(session).sequences(model.id)
        # Shard 0, slice 1: position 2 in [0,1,2], 1 in [1,2,0], 3 in [2,0,1].
        victim = _sample_in(session, samples, shard=0, slice_index=1)
        before = {p.sequence_id: p.layer_ids for p in lineage.prefixes(model.id)}
        generation = model.serving_generation

        affected = lineage.affected_layers(model.id, [victim.id])
        result = lineage.deactivate_samples(model.id, [victim.id])

        assert sorted(layer.id for layer in affected) == result.invalidated_layer_ids
        shard0 = [s for s in sequences if s.shard_id == victim.shard_id]
        assert result.first_invalid_position == {shard0[0].id: 2, shard0[1].id: 1, shard0[2].id: 3}
        after = {p.sequence_id: p.layer_ids for p in lineage.prefixes(model.id)}
        for sequence in sequences:
            k = result.first_invalid_position.get(sequence.id)
            expected = before[sequence.id] if k is None else before[sequence.id][: k - 1]
            assert after[sequence.id] == expected
        for layer_id in result.invalidated_layer_ids:
            assert _layer(session, layer_id).state is LayerState.invalidated
        assert result.slice_versions == {victim.slice_id: 1}
        assert result.serving_generation == generation + 1 == model.serving_generation
        assert victim.deleted and victim.deleted_at is not None
        assert session.get(SamplePayload, victim.id) is None
        choice = lineage.serving_choice(model.id)
        assert choice[0] is not None and choice[0].sequence_id == shard0[2].id
        assert choice[0].length == 2

    def test_deleting_again_changes_nothing(
        self, session: Session, trained: tuple[Model, list[Sample], SimTrainer]
    ) -> None:
        model, samples, _ = trained
        lineage = LineageRepository.from_session(session)
        lineage.deactivate_samples(model.id, [samples[0].id])
        generation = model.serving_generation
        slice_id = samples[0].slice_id
        assert slice_id is not None
        versions = lineage.snapshot([slice_id])
        again = lineage.deactivate_samples(model.id, [samples[0].id])
        assert again.deleted_sample_ids == [] and again.already_deleted_sample_ids == [
            samples[0].id
        ]
        assert again.invalidated_layer_ids == []
        assert model.serving_generation == generation
        assert lineage.snapshot([slice_id]) == versions

    def test_hitting_every_first_slice_drops_the_shard(
        self, session: Session, trained: tuple[Model, list[Sample], SimTrainer]
    ) -> None:
        model, samples, _ = trained
        lineage = LineageRepository.from_session(session)
        victims = [_sample_in(session, samples, shard=1, slice_index=i) for i in range(3)]
        lineage.deactivate_samples(model.id, [v.id for v in victims])
        choice = lineage.serving_choice(model.id)
        assert choice[1] is None
        assert choice[0] is not None and choice[0].length == 3

    def test_samples_of_another_model_are_refused(
        self, session: Session, model: Model, tenant: Tenant
    ) -> None:
        other = make_model(session, tenant)
        sample = _populate(session, other, 1)[0]
        with pytest.raises(LineageError):
            LineageRepository.from_session(session).deactivate_samples(model.id, [sample.id])


class TestActivation:
    def test_retrain_restores_the_full_prefix(
        self, session: Session, trained: tuple[Model, list[Sample], SimTrainer]
    ) -> None:
        model, samples, trainer = trained
        lineage = LineageRepository.from_session(session)
        victim = _sample_in(session, samples, shard=0, slice_index=1)
        result = lineage.deactivate_samples(model.id, [victim.id])
        sequence = ModelRepository.from_session(session).sequences(model.id)[0]
        k = result.first_invalid_position[sequence.id]
        generation = model.serving_generation

        activation = trainer.train_and_activate(sequence, k)

        assert len(activation.activated_layer_ids) == 3 - k + 1
        assert activation.discarded_layer_ids == []
        prefix = next(p for p in lineage.prefixes(model.id) if p.sequence_id == sequence.id)
        assert prefix.length == 3
        assert prefix.layer_ids[k - 1 :] == tuple(activation.activated_layer_ids)
        assert model.serving_generation == generation + 1
        for layer_id in activation.activated_layer_ids:
            assert victim.id not in trainer.trained_on[layer_id]

    def test_layers_whose_versions_moved_are_discarded(
        self, session: Session, trained: tuple[Model, list[Sample], SimTrainer]
    ) -> None:
        model, samples, trainer = trained
        lineage = LineageRepository.from_session(session)
        sequence = ModelRepository.from_session(session).sequences(model.id)[0]
        first = _sample_in(session, samples, shard=0, slice_index=2)  # position 3 of [0,1,2]
        lineage.deactivate_samples(model.id, [first.id])
        in_flight = trainer.train(sequence, 3)
        second = next(s for s in samples if s.slice_id == first.slice_id and s.id != first.id)
        lineage.deactivate_samples(model.id, [second.id])  # lands during the retrain
        generation = model.serving_generation

        activation = lineage.activate(model.id, in_flight)

        assert activation.activated_layer_ids == []
        assert activation.discarded_layer_ids == in_flight
        assert _layer(session, in_flight[0]).state is LayerState.discarded
        assert model.serving_generation == generation
        prefix = next(p for p in lineage.prefixes(model.id) if p.sequence_id == sequence.id)
        assert prefix.length == 2

    def test_approximate_layers_serve_until_the_exact_retrain_and_never_replace_it(
        self, session: Session, trained: tuple[Model, list[Sample], SimTrainer]
    ) -> None:
        model, samples, trainer = trained
        lineage = LineageRepository.from_session(session)
        sequence = ModelRepository.from_session(session).sequences(model.id)[0]
        victim = _sample_in(session, samples, shard=0, slice_index=1)
        result = lineage.deactivate_samples(model.id, [victim.id], purge_payloads=False)
        assert session.get(SamplePayload, victim.id) is not None  # kept for the pass
        assert victim.external_id.startswith("deleted:")  # the identifier went at once
        k = result.first_invalid_position[sequence.id]
        retrain = trainer.train(sequence, k)  # the exact retrain, in flight
        approximate = trainer.train(sequence, k, approximate=True)

        served = lineage.activate(model.id, approximate)
        assert served.activated_layer_ids == approximate
        prefix = lineage.prefixes(model.id, sequence_id=sequence.id)[0]
        assert (prefix.length, prefix.exact) == (3, k - 1)
        assert lineage.exact_length(model.id, sequence.id) == k - 1

        exact = lineage.activate(model.id, retrain)
        assert exact.activated_layer_ids == retrain
        assert set(exact.superseded_layer_ids) == set(approximate)
        assert lineage.exact_length(model.id, sequence.id) == 3
        late = trainer.train(sequence, k, approximate=True)  # a pass after the retrain
        assert lineage.activate(model.id, late).discarded_layer_ids == late
        assert lineage.prefixes(model.id, sequence_id=sequence.id)[0].layer_ids[k - 1 :] == tuple(
            retrain
        )

    def test_only_training_layers_of_this_model_can_be_activated(
        self, session: Session, trained: tuple[Model, list[Sample], SimTrainer], tenant: Tenant
    ) -> None:
        model, _, _ = trained
        lineage = LineageRepository.from_session(session)
        active = session.scalars(
            sa.select(Layer.id).where(Layer.state == LayerState.active)
        ).first()
        assert active is not None
        with pytest.raises(LineageError):
            lineage.activate(model.id, [active])
        other = make_model(session, tenant)
        with pytest.raises(LineageError):
            lineage.activate(other.id, [active])

    def test_ties_go_to_the_sequence_trained_last(self, session: Session, tenant: Tenant) -> None:
        model = make_model(session, tenant, n_shards=1, n_slices=2, orders=[[0, 1], [1, 0]])
        _populate(session, model, 20)
        trainer = SimTrainer(session, model.id)
        sequences = ModelRepository.from_session(session).sequences(model.id)
        trainer.train_and_activate(sequences[1])
        trainer.train_and_activate(sequences[0])
        lineage = LineageRepository.from_session(session)
        choice = lineage.serving_choice(model.id)[0]
        assert choice is not None and choice.sequence_id == sequences[0].id
        trainer.train_and_activate(sequences[1])  # retrained: now the newest
        choice = lineage.serving_choice(model.id)[0]
        assert choice is not None and choice.sequence_id == sequences[1].id

    def test_unknown_model(self, session: Session) -> None:
        from service.errors import ModelNotFoundError

        with pytest.raises(ModelNotFoundError):
            LineageRepository.from_session(session).serving_choice(uuid.uuid4())
