"""The lineage invariant: which layer saw which slice version, and what may be served.

A layer is valid iff every slice version it recorded equals the slice's current version. The
rules (valid prefixes, the serving choice, the activation plan) are pure functions in
``service.lineage.rules``; this repository loads their rows and applies their result. A
deletion bumps the versions of the slices it touches and, in the same transaction, marks the
layers that saw them ``invalidated`` and bumps the model's ``serving_generation``. A retrain's
layers become ``active`` only if their recorded versions are still current at activation.
Both paths lock the model row first, so validity changes of one model are serialised.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from service.db.hashing import TenantHasher
from service.db.models import (
    Layer,
    LayerDeletion,
    LayerInvalidation,
    LayerSliceVersion,
    LayerState,
    Model,
    Sample,
    Shard,
    Slice,
    SliceSequence,
)
from service.db.models.base import utcnow
from service.db.repositories.base import Repository
from service.db.repositories.models import ModelRepository
from service.db.repositories.samples import MarkedSample, SampleRepository
from service.db.repositories.tenants import TenantRepository
from service.errors import LineageError
from service.lineage.rules import (
    Activation,
    LayerRow,
    Prefix,
    SequenceRow,
    choose_served,
    plan_activation,
    plan_withdrawal,
    served_shares,
    valid_prefixes,
)

__all__ = [  # the rules' values, where callers have always found them
    "Activation",
    "Deactivation",
    "InvalidatedLayer",
    "LineageRepository",
    "Prefix",
    "choose_served",
    "served_shares",
]


@dataclass(frozen=True)
class InvalidatedLayer:
    """A layer a deletion turned off, as the deletion's ``UPDATE … RETURNING`` gave it."""

    id: int
    sequence_id: uuid.UUID
    position: int
    parent_layer_id: int | None
    artifact_ref: str | None
    trained_sample_count: int


@dataclass(frozen=True)
class Deactivation:
    """What one deletion changed, all in the caller's transaction."""

    deleted_sample_ids: list[int]
    already_deleted_sample_ids: list[int]
    slice_versions: dict[uuid.UUID, int]  # bumped slices and their new versions
    invalidated: list[InvalidatedLayer]  # by id
    serving_generation: int
    shard_ids: frozenset[uuid.UUID] = frozenset()  # the shards of the deleted samples

    @property
    def invalidated_layer_ids(self) -> list[int]:
        return [layer.id for layer in self.invalidated]

    @property
    def first_invalid_position(self) -> dict[uuid.UUID, int]:
        """Per affected sequence, the lowest stage the deletion invalidated."""
        first: dict[uuid.UUID, int] = {}
        for layer in self.invalidated:
            current = first.get(layer.sequence_id, layer.position)
            first[layer.sequence_id] = min(current, layer.position)
        return first


def _stale_condition() -> sa.ColumnElement[bool]:
    """True for a layer whose recorded version of some slice is no longer current."""
    return sa.exists(
        sa.select(LayerSliceVersion.layer_id)
        .join(Slice, Slice.id == LayerSliceVersion.slice_id)
        .where(LayerSliceVersion.layer_id == Layer.id, LayerSliceVersion.version != Slice.version)
    )


def _layers_of_model(model_id: uuid.UUID) -> sa.Select[Layer]:
    return (
        sa.select(Layer)
        .join(SliceSequence, SliceSequence.id == Layer.sequence_id)
        .join(Shard, Shard.id == SliceSequence.shard_id)
        .where(Shard.model_id == model_id)
    )


class LineageRepository(Repository):
    # -- reading the lineage -------------------------------------------------------------

    def prefix_slice_ids(self, sequence: SliceSequence, position: int) -> list[uuid.UUID]:
        """The ids of the slices π1..π_position of ``sequence``, in order."""
        if not 1 <= position <= len(sequence.slice_order):
            raise LineageError(f"position {position} is outside 1..{len(sequence.slice_order)}")
        by_index = dict(
            self.session.execute(
                sa.select(Slice.index, Slice.id).where(Slice.shard_id == sequence.shard_id)
            ).all()
        )
        return [by_index[i] for i in sequence.slice_order[:position]]

    def active_stages(self, sequence_id: uuid.UUID, length: int) -> list[Layer]:
        """The active, stored layers of stages 1..length of a sequence: the prefix a retrain
        resumes from. Raises LineageError when one is missing."""
        layers = list(
            self.session.scalars(
                sa.select(Layer)
                .where(
                    Layer.sequence_id == sequence_id,
                    Layer.position <= length,
                    Layer.state == LayerState.active,
                )
                .order_by(Layer.position)
            )
        )
        if [layer.position for layer in layers] != list(range(1, length + 1)) or any(
            layer.artifact_ref is None for layer in layers
        ):
            raise LineageError(f"sequence {sequence_id} has no active, stored stages 1..{length}")
        return layers

    def snapshot(self, slice_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, int]:
        """Current versions of these slices; read them with the training data they describe."""
        ids = list(set(slice_ids))
        return dict(
            self.session.execute(sa.select(Slice.id, Slice.version).where(Slice.id.in_(ids))).all()
        )

    def shard_versions(self, shard_id: uuid.UUID) -> dict[uuid.UUID, int]:
        """Current versions of every slice of a shard."""
        return self.shards_versions([shard_id]).get(shard_id, {})

    def shards_versions(
        self, shard_ids: Iterable[uuid.UUID]
    ) -> dict[uuid.UUID, dict[uuid.UUID, int]]:
        """Current versions of every slice of these shards, per shard (one query)."""
        rows = self.session.execute(
            sa.select(Slice.shard_id, Slice.id, Slice.version).where(
                Slice.shard_id.in_(list(shard_ids))
            )
        )
        versions: dict[uuid.UUID, dict[uuid.UUID, int]] = defaultdict(dict)
        for shard_id, slice_id, version in rows:
            versions[shard_id][slice_id] = version
        return dict(versions)

    def invalid_among(self, layer_ids: Iterable[int]) -> set[int]:
        """The layers among these that are not active, or whose slice versions moved."""
        ids = set(layer_ids)
        valid = self.session.scalars(
            sa.select(Layer.id).where(
                Layer.id.in_(list(ids)),
                Layer.state == LayerState.active,
                sa.not_(_stale_condition()),
            )
        )
        return ids - set(valid)

    def stale_layer_ids(self, model_id: uuid.UUID, among: Iterable[int] | None = None) -> set[int]:
        """Layers of the model (or of ``among``) whose recorded slice versions are no longer
        all current."""
        query = _layers_of_model(model_id).where(_stale_condition()).with_only_columns(Layer.id)
        if among is not None:
            query = query.where(Layer.id.in_(list(among)))
        return set(self.session.scalars(query))

    def active_layers(self, sequence_ids: Iterable[uuid.UUID]) -> list[Layer]:
        """The active layers of these sequences, by sequence and position."""
        query = sa.select(Layer).where(
            Layer.sequence_id.in_(list(sequence_ids)), Layer.state == LayerState.active
        )
        return list(self.session.scalars(query.order_by(Layer.sequence_id, Layer.position)))

    def layers(self, model_id: uuid.UUID) -> list[Layer]:
        return list(self.session.scalars(_layers_of_model(model_id).order_by(Layer.id)))

    def affected_layers(self, model_id: uuid.UUID, sample_ids: Iterable[int]) -> list[Layer]:
        """Active layers of the model that were trained on a slice holding one of these samples."""
        slice_ids = sa.select(Sample.slice_id).where(
            Sample.model_id == model_id, Sample.id.in_(list(sample_ids))
        )
        saw_slice = sa.exists(
            sa.select(LayerSliceVersion.layer_id).where(
                LayerSliceVersion.layer_id == Layer.id, LayerSliceVersion.slice_id.in_(slice_ids)
            )
        )
        query = _layers_of_model(model_id).where(Layer.state == LayerState.active, saw_slice)
        return list(self.session.scalars(query.order_by(Layer.sequence_id, Layer.position)))

    def prefixes(
        self,
        model_id: uuid.UUID,
        *,
        sequence_id: uuid.UUID | None = None,
        shard_ids: Iterable[uuid.UUID] | None = None,
    ) -> list[Prefix]:
        """Each sequence's longest valid prefix (possibly empty), ordered by shard, sequence;
        only one sequence's when ``sequence_id`` is given, only these shards' with
        ``shard_ids``."""
        sequences = (
            sa.select(Shard.index, SliceSequence.id, SliceSequence.index)
            .join(SliceSequence, SliceSequence.shard_id == Shard.id)
            .where(Shard.model_id == model_id)
            .order_by(Shard.index, SliceSequence.index)
        )
        # The rule looks at active layers only; it checks their versions itself.
        active_layers = _layers_of_model(model_id).where(Layer.state == LayerState.active)
        if sequence_id is not None:
            sequences = sequences.where(SliceSequence.id == sequence_id)
            active_layers = active_layers.where(Layer.sequence_id == sequence_id)
        if shard_ids is not None:
            shards = list(shard_ids)
            sequences = sequences.where(Shard.id.in_(shards))
            active_layers = active_layers.where(Shard.id.in_(shards))
        rows = self.session.execute(sequences).all()
        layers, versions = self._layer_rows(active_layers)
        return valid_prefixes(
            [SequenceRow(id_, shard_index, index) for shard_index, id_, index in rows],
            layers,
            versions,
        )

    def exact_length(self, model_id: uuid.UUID, sequence_id: uuid.UUID) -> int:
        """How many stages of one sequence are valid and exact: where its retrain starts from
        (approximate layers above them are served, and replaced by the retrain)."""
        prefixes = self.prefixes(model_id, sequence_id=sequence_id)
        if not prefixes:
            raise LineageError(f"no sequence {sequence_id} in model {model_id}")
        return prefixes[0].exact

    def serving_choice(self, model_id: uuid.UUID) -> dict[int, Prefix | None]:
        """Per shard index: the sequence with the longest valid prefix, or None (shard drops out).

        Ties go to the prefix trained last (the highest layer id, ids being monotonic).
        """
        model = ModelRepository.from_session(self.session).get(model_id)
        return choose_served(self.prefixes(model_id), model.n_shards)

    # -- changing the lineage ------------------------------------------------------------

    def record_layer(
        self,
        *,
        sequence: SliceSequence,
        position: int,
        slice_versions: Mapping[uuid.UUID, int],
        parent_layer_id: int | None,
        artifact_ref: str | None = None,
        artifact_digest: str | None = None,
        trained_sample_count: int = 0,
        job_id: uuid.UUID | None = None,
        approximate: bool = False,
    ) -> Layer:
        """Write a trained stage (state ``training``) with the slice versions it was trained on.

        ``slice_versions`` must be the snapshot taken when the training data was read, and must
        name exactly the slices π1..π_position of the sequence.
        """
        expected = set(self.prefix_slice_ids(sequence, position))
        if set(slice_versions) != expected:
            raise LineageError(
                f"stage {position} must record the versions of exactly the slices π1..π{position}"
            )
        if (position == 1) != (parent_layer_id is None):
            raise LineageError("stage 1 has no parent layer; every later stage has one")
        if parent_layer_id is not None:
            parent = self.session.get(Layer, parent_layer_id)
            if (
                parent is None
                or parent.sequence_id != sequence.id
                or parent.position != position - 1
            ):
                raise LineageError(f"layer {parent_layer_id} is not stage {position - 1} here")
        layer = Layer(
            sequence_id=sequence.id,
            position=position,
            parent_layer_id=parent_layer_id,
            state=LayerState.training,
            artifact_ref=artifact_ref,
            artifact_digest=artifact_digest,
            trained_sample_count=trained_sample_count,
            job_id=job_id,
            approximate=approximate,
        )
        self.session.add(layer)
        self.session.flush()
        self.session.add_all(
            LayerSliceVersion(layer_id=layer.id, slice_id=slice_id, version=version)
            for slice_id, version in slice_versions.items()
        )
        self.session.flush()
        return layer

    def activate(
        self, model_id: uuid.UUID, layer_ids: Sequence[int], *, sources: Collection[int] = ()
    ) -> Activation:
        """Serve newly trained layers, if the slice versions they saw are still current.

        :func:`service.lineage.rules.plan_activation` decides, on the layers, the active layers
        of their sequences and the slices' current versions, read with the model row locked;
        the plan is applied in a few set-based statements (superseding before activating, for
        the one-active-per-stage index), and the model's ``serving_generation`` moves iff a
        layer was activated. ``sources``: an approximate pass's, the chain it edited (it is not
        served once one of them is withdrawn).
        """
        model = ModelRepository.from_session(self.session).get_for_update(model_id)
        ids = set(layer_ids)
        new = orm.aliased(Layer)
        sequences = sa.select(new.sequence_id).where(new.id.in_(list(ids)))
        layers, versions = self._layer_rows(
            _layers_of_model(model_id).where(
                sa.or_(
                    Layer.id.in_([*ids, *sources]),
                    sa.and_(Layer.sequence_id.in_(sequences), Layer.state == LayerState.active),
                )
            )
        )
        derived = frozenset(sources)
        run = [replace(layer, sources=derived) for layer in layers if layer.id in ids]
        if len(run) != len(ids):
            raise LineageError("some layers do not exist or belong to another model")
        plan = plan_activation(run, [layer for layer in layers if layer.id not in ids], versions)
        for layer_ids_, values in (
            (plan.supersede, {"state": LayerState.superseded}),
            (plan.activate, {"state": LayerState.active, "activated_at": utcnow()}),
            (plan.discard, {"state": LayerState.discarded}),
        ):
            if layer_ids_:
                self.session.execute(
                    sa.update(Layer).where(Layer.id.in_(list(layer_ids_))).values(**values)
                )
        if plan.bumps_generation:
            model.serving_generation += 1
        self.session.flush()
        return plan.as_activation()

    def withdraw(
        self, model_id: uuid.UUID, shard_ids: Collection[uuid.UUID], request_id: uuid.UUID
    ) -> list[int]:
        """What a completing deletion withdraws (:func:`service.lineage.rules.plan_withdrawal`):
        every approximate layer of its shards, served or invalidated, and the layers it
        invalidated, moved to ``discarded`` (artifact collection then deletes their weights);
        the model's ``serving_generation`` moves iff a served layer went. Call with the model
        row locked; returns the withdrawn layers' ids."""
        model = ModelRepository.from_session(self.session).get_for_update(model_id)
        sequence_ids = list(
            self.session.scalars(
                sa.select(SliceSequence.id).where(SliceSequence.shard_id.in_(list(shard_ids)))
            )
        )
        invalidated = sa.select(LayerInvalidation.layer_id).where(
            LayerInvalidation.request_id == request_id
        )
        candidates = sa.select(Layer).where(
            Layer.sequence_id.in_(sequence_ids),
            Layer.state.in_([LayerState.active, LayerState.invalidated]),
            sa.or_(Layer.approximate.is_(True), Layer.id.in_(invalidated)),
        )
        layers, _ = self._layer_rows(candidates)
        withdrawn = plan_withdrawal(layers, sequence_ids, set(self.session.scalars(invalidated)))
        if not withdrawn:
            return []
        served = any(layer.id in withdrawn and layer.state is LayerState.active for layer in layers)
        self.session.execute(
            sa.update(Layer).where(Layer.id.in_(list(withdrawn))).values(state=LayerState.discarded)
        )
        if served:
            model.serving_generation += 1
        self.session.flush()
        return list(withdrawn)

    def _layer_rows(self, select: sa.Select[Any]) -> tuple[list[LayerRow], dict[uuid.UUID, int]]:
        """The layers ``select`` picks, as the rules' rows (by id), with the current versions
        of the slices they recorded: one statement."""
        query = (
            select.with_only_columns(
                Layer.id,
                Layer.sequence_id,
                Layer.position,
                Layer.parent_layer_id,
                Layer.state,
                Layer.approximate,
                LayerSliceVersion.slice_id,
                LayerSliceVersion.version,
                Slice.version,
            )
            .outerjoin(LayerSliceVersion, LayerSliceVersion.layer_id == Layer.id)
            .outerjoin(Slice, Slice.id == LayerSliceVersion.slice_id)
            .order_by(Layer.id)
        )
        heads: dict[int, tuple[uuid.UUID, int, int | None, LayerState, bool]] = {}
        recorded: dict[int, dict[uuid.UUID, int]] = defaultdict(dict)
        current: dict[uuid.UUID, int] = {}
        for row in self.session.execute(query):
            layer_id, sequence_id, position, parent_id, state, approximate = row[:6]
            heads.setdefault(layer_id, (sequence_id, position, parent_id, state, approximate))
            slice_id, recorded_version, current_version = row[6:]
            if slice_id is not None:
                recorded[layer_id][slice_id] = recorded_version
                if current_version is not None:
                    current[slice_id] = current_version
        layers = [
            LayerRow(
                layer_id, sequence_id, position, parent_id, state, approximate, recorded[layer_id]
            )
            for layer_id, (sequence_id, position, parent_id, state, approximate) in heads.items()
        ]
        return layers, current

    def recorded_versions(self, layer_ids: Iterable[int]) -> dict[int, dict[uuid.UUID, int]]:
        """Per layer, the slice versions it was trained on."""
        rows = self.session.execute(
            sa.select(
                LayerSliceVersion.layer_id, LayerSliceVersion.slice_id, LayerSliceVersion.version
            ).where(LayerSliceVersion.layer_id.in_(list(layer_ids)))
        )
        versions: dict[int, dict[uuid.UUID, int]] = defaultdict(dict)
        for layer_id, slice_id, version in rows:
            versions[layer_id][slice_id] = version
        return dict(versions)

    def by_ids(self, layer_ids: Iterable[int]) -> dict[int, Layer]:
        layers = self.session.scalars(sa.select(Layer).where(Layer.id.in_(list(layer_ids))))
        return {layer.id: layer for layer in layers}

    def link_deletion(self, layer_ids: Iterable[int], request_id: uuid.UUID) -> None:
        """Record that these approximate layers unlearned this deletion request."""
        self.session.add_all(LayerDeletion(layer_id=i, request_id=request_id) for i in layer_ids)
        self.session.flush()

    def link_invalidation(self, layer_ids: Iterable[int], request_id: uuid.UUID) -> None:
        """Record that this deletion request invalidated these layers."""
        self.session.add_all(
            LayerInvalidation(layer_id=i, request_id=request_id) for i in layer_ids
        )
        self.session.flush()

    def invalidated_by_many(self, request_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[int]]:
        """The layers each deletion request invalidated, by id."""
        rows = self.session.execute(
            sa.select(LayerInvalidation.request_id, LayerInvalidation.layer_id)
            .where(LayerInvalidation.request_id.in_(list(request_ids)))
            .order_by(LayerInvalidation.layer_id)
        )
        invalidated: dict[uuid.UUID, list[int]] = defaultdict(list)
        for request_id, layer_id in rows:
            invalidated[request_id].append(layer_id)
        return dict(invalidated)

    def approximated_for(self, request_id: uuid.UUID) -> list[Layer]:
        """The approximate layers made for a deletion request, oldest first."""
        return list(
            self.session.scalars(
                sa.select(Layer)
                .join(LayerDeletion, LayerDeletion.layer_id == Layer.id)
                .where(LayerDeletion.request_id == request_id)
                .order_by(Layer.id)
            )
        )

    def artifact_refs(self, layer_ids: Iterable[int]) -> dict[int, str]:
        rows = self.session.execute(
            sa.select(Layer.id, Layer.artifact_ref).where(Layer.id.in_(list(layer_ids)))
        )
        return {layer_id: ref for layer_id, ref in rows if ref is not None}

    def deactivate_samples(
        self,
        model_id: uuid.UUID,
        sample_ids: Iterable[int],
        *,
        purge_payloads: bool = True,
        hasher: TenantHasher | None = None,
    ) -> Deactivation:
        """Delete samples (by id) from the lineage: :meth:`SampleRepository.mark_deleted` and
        :meth:`deactivate` of those still live, with the model row locked first (``hasher``:
        the model's tenant's, read here unless the caller holds it). Samples deleted before are
        reported and change nothing."""
        model = ModelRepository.from_session(self.session).get_for_update(model_id)
        ids = sorted(set(sample_ids))
        known = set(
            self.session.scalars(
                sa.select(Sample.id).where(Sample.model_id == model_id, Sample.id.in_(ids))
            )
        )
        if len(known) != len(ids):
            raise LineageError("some samples do not exist or belong to another model")
        now = utcnow()
        hasher = hasher or TenantRepository.from_session(self.session).hasher(model.tenant_id)
        marked = SampleRepository.from_session(self.session).mark_deleted(
            model_id, hasher, sample_ids=ids, now=now
        )
        deactivation = self.deactivate(model, marked, purge_payloads=purge_payloads, now=now)
        live = set(deactivation.deleted_sample_ids)
        return replace(deactivation, already_deleted_sample_ids=[i for i in ids if i not in live])

    def deactivate(
        self,
        model: Model,
        marked: Sequence[MarkedSample],
        *,
        purge_payloads: bool,
        now: datetime,
    ) -> Deactivation:
        """No serving of what saw the samples a deletion just marked (the model row locked).

        Hard-deletes their payloads (unless an approximate pass still needs them), bumps each
        touched slice's version once, invalidates every active layer that recorded a version of
        one of those slices, and bumps the model's ``serving_generation``: a few set-based
        statements whose cost grows with what the deletion touches, not with the model.
        """
        if not marked:
            return Deactivation([], [], {}, [], model.serving_generation)
        sample_ids = [m.id for m in marked]
        samples = SampleRepository.from_session(self.session)
        # No pass reads an evaluation sample: its payload always goes now.
        samples.delete_payloads(
            sample_ids if purge_payloads else [m.id for m in marked if m.slice_id is None]
        )
        touched = sorted({m.slice_id for m in marked if m.slice_id is not None})
        bumped = self.session.execute(
            sa.update(Slice)
            .where(Slice.id.in_(touched))
            .values(version=Slice.version + 1)
            .returning(Slice.id, Slice.version)
        )
        versions = {slice_id: version for slice_id, version in bumped}
        saw_touched = sa.select(LayerSliceVersion.layer_id).where(
            LayerSliceVersion.slice_id.in_(touched)
        )
        rows = self.session.execute(
            sa.update(Layer)
            .where(Layer.state == LayerState.active, Layer.id.in_(saw_touched))
            .values(state=LayerState.invalidated, invalidated_at=now)
            .returning(
                Layer.id,
                Layer.sequence_id,
                Layer.position,
                Layer.parent_layer_id,
                Layer.artifact_ref,
                Layer.trained_sample_count,
            )
        )
        invalidated = sorted((InvalidatedLayer(*row) for row in rows), key=lambda layer: layer.id)
        model.serving_generation += 1
        return Deactivation(
            deleted_sample_ids=sample_ids,
            already_deleted_sample_ids=[],
            slice_versions=versions,
            invalidated=invalidated,
            serving_generation=model.serving_generation,
            shard_ids=frozenset(m.shard_id for m in marked if m.shard_id is not None),
        )
