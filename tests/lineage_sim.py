"""A stand-in trainer for lineage tests: records stages exactly as a real training job must
(snapshot the slice versions with the data, record each stage, activate at the end) and
remembers which samples each layer was trained on."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.models import Layer, LayerState, SliceSequence
from service.db.repositories import LineageRepository, SampleRepository
from service.db.repositories.lineage import Activation


class SimTrainer:
    def __init__(self, session: Session, model_id: uuid.UUID) -> None:
        self.session = session
        self.model_id = model_id
        self.lineage = LineageRepository.from_session(session)
        self.samples = SampleRepository.from_session(session)
        self.trained_on: dict[int, frozenset[int]] = {}

    def train(
        self, sequence: SliceSequence, from_position: int = 1, *, approximate: bool = False
    ) -> list[int]:
        """Record stages from_position..L of ``sequence`` (state ``training``); ``approximate``
        records them as an approximate pass's output."""
        parent = None
        if from_position > 1:
            parent = self.session.scalar(
                sa.select(Layer.id).where(
                    Layer.sequence_id == sequence.id,
                    Layer.position == from_position - 1,
                    Layer.state == LayerState.active,
                )
            )
            assert parent is not None, "retraining needs an active parent stage"
        layer_ids = []
        for position in range(from_position, len(sequence.slice_order) + 1):
            slice_ids = self.lineage.prefix_slice_ids(sequence, position)
            versions = self.lineage.snapshot(slice_ids)
            data = self.samples.training_set(slice_ids)
            layer = self.lineage.record_layer(
                sequence=sequence,
                position=position,
                slice_versions=versions,
                parent_layer_id=parent,
                trained_sample_count=len(data),
                approximate=approximate,
            )
            self.trained_on[layer.id] = frozenset(sample.id for sample, _ in data)
            parent = layer.id
            layer_ids.append(layer.id)
        return layer_ids

    def train_and_activate(self, sequence: SliceSequence, from_position: int = 1) -> Activation:
        return self.lineage.activate(self.model_id, self.train(sequence, from_position))
