"""Models and their lineage skeleton: shards, slices and slice sequences."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from typing import Any

import sqlalchemy as sa

from service.db.models import (
    AUTO_METHOD,
    Model,
    Sample,
    Shard,
    Slice,
    SliceSequence,
    Split,
    Task,
    UnlearningPolicy,
)
from service.db.repositories.base import Repository
from service.errors import InvalidModelConfigError, ModelNotFoundError
from unlearning.sharding import PlacementPolicy


def _validate_orders(orders: Sequence[Sequence[int]], n_slices: int, budget: int) -> None:
    if not orders:
        raise InvalidModelConfigError("`sequence_orders` must hold at least one order")
    if len(orders) > budget:
        raise InvalidModelConfigError(
            f"`sequence_orders` holds {len(orders)} orders, more than `budget` = {budget}"
        )
    expected = list(range(n_slices))
    for order in orders:
        if sorted(order) != expected:
            raise InvalidModelConfigError(
                f"`sequence_orders`: {list(order)} is not a permutation of 0..{n_slices - 1}"
            )
    if len({tuple(o) for o in orders}) != len(orders):
        raise InvalidModelConfigError("`sequence_orders` repeats an order")


class ModelRepository(Repository):
    def create(
        self,
        *,
        tenant_id: uuid.UUID,
        name: str,
        task: Task,
        n_shards: int,
        n_slices: int,
        budget: int,
        sequence_orders: Sequence[Sequence[int]],
        compute_profile: str,
        base_model_id: uuid.UUID,
        placement: PlacementPolicy = PlacementPolicy.sample,
        min_live_shards: int = 1,
        labels: Sequence[str] | None = None,
        config: dict[str, Any] | None = None,
        unlearning_policy: UnlearningPolicy = UnlearningPolicy.exact,
        approximate_method: str = AUTO_METHOD,
        method_config: dict[str, Any] | None = None,
        grade_approximations: bool = False,
    ) -> Model:
        """A model with its shards, slices (version 0) and, in every shard, the given orders."""
        for field, value in (("n_shards", n_shards), ("n_slices", n_slices), ("budget", budget)):
            if value < 1:
                raise InvalidModelConfigError(f"`{field}` must be at least 1, got {value}")
        if task is Task.classification:
            if not labels or len(set(labels)) != len(labels) or len(labels) < 2:
                raise InvalidModelConfigError("`labels` must list at least two distinct labels")
        elif labels:
            raise InvalidModelConfigError("`labels` is only for classification models")
        if grade_approximations and task is not Task.classification:
            raise InvalidModelConfigError(
                "`grade_approximations` is for classification models: a pass's grade compares "
                "class outputs"
            )
        _validate_orders(sequence_orders, n_slices, budget)

        model = Model(
            tenant_id=tenant_id,
            name=name,
            task=task,
            labels=list(labels) if labels else None,
            unlearning_policy=unlearning_policy,
            approximate_method=approximate_method,
            method_config=method_config,
            n_shards=n_shards,
            n_slices=n_slices,
            budget=budget,
            config=dict(config or {}),
            compute_profile=compute_profile,
            base_model_id=base_model_id,
            placement=placement,
            min_live_shards=min_live_shards,
            grade_approximations=grade_approximations,
        )
        self.session.add(model)
        self.session.flush()
        for s in range(n_shards):
            shard = Shard(model_id=model.id, index=s)
            self.session.add(shard)
            self.session.flush()
            self.session.add_all(Slice(shard_id=shard.id, index=i) for i in range(n_slices))
            self.session.add_all(
                SliceSequence(shard_id=shard.id, index=j, slice_order=list(order))
                for j, order in enumerate(sequence_orders)
            )
        self.session.flush()
        return model

    def get(self, model_id: uuid.UUID, *, tenant_id: uuid.UUID | None = None) -> Model:
        """The model, or ModelNotFoundError; another tenant's model is not found either."""
        model = self.session.get(Model, model_id)
        if model is None or (tenant_id is not None and model.tenant_id != tenant_id):
            raise ModelNotFoundError(f"no model {model_id}")
        return model

    def of_tenant(self, tenant_id: uuid.UUID, *, limit: int = 100) -> list[Model]:
        """A tenant's models, newest first."""
        query = sa.select(Model).where(Model.tenant_id == tenant_id)
        return list(self.session.scalars(query.order_by(Model.created_at.desc()).limit(limit)))

    def get_for_update(self, model_id: uuid.UUID, *, tenant_id: uuid.UUID | None = None) -> Model:
        """The model row, locked until the transaction ends: serialises validity changes.
        Another tenant's model is not found (and not locked).

        ``FOR NO KEY UPDATE``: it excludes other lockers but not the key-share locks that
        inserting rows referencing the model takes (a deletion request, a job), so a request
        that inserted such a row first cannot deadlock with another waiting here. ``OF models``:
        the base model, loaded in the same statement, stays unlocked (models on one base model
        never wait for each other)."""
        query = sa.select(Model).where(Model.id == model_id)
        if tenant_id is not None:
            query = query.where(Model.tenant_id == tenant_id)
        model = self.session.scalar(
            query.with_for_update(key_share=True, of=Model).execution_options(
                populate_existing=True
            )
        )
        if model is None:
            raise ModelNotFoundError(f"no model {model_id}")
        return model

    def has_live_samples(self, model_id: uuid.UUID) -> bool:
        """Whether the model has a live training sample (evaluation samples train nothing)."""
        query = sa.select(Sample.id).where(
            Sample.model_id == model_id, Sample.split == Split.train, Sample.deleted.is_(False)
        )
        return self.session.scalar(query.limit(1)) is not None

    def serving_generation(self, model_id: uuid.UUID) -> int:
        """One cheap read: the generation a server compares with the one it holds."""
        generation = self.session.scalar(
            sa.select(Model.serving_generation).where(Model.id == model_id)
        )
        if generation is None:
            raise ModelNotFoundError(f"no model {model_id}")
        return generation

    def shards(self, model_id: uuid.UUID) -> list[Shard]:
        return list(
            self.session.scalars(
                sa.select(Shard).where(Shard.model_id == model_id).order_by(Shard.index)
            )
        )

    def slices(self, model_id: uuid.UUID) -> list[Slice]:
        """Every slice of the model, ordered by (shard index, slice index)."""
        return list(
            self.session.scalars(
                sa.select(Slice)
                .join(Shard, Shard.id == Slice.shard_id)
                .where(Shard.model_id == model_id)
                .order_by(Shard.index, Slice.index)
            )
        )

    def shard_sequences(self, shard_ids: Collection[uuid.UUID]) -> list[SliceSequence]:
        return list(
            self.session.scalars(
                sa.select(SliceSequence)
                .where(SliceSequence.shard_id.in_(list(shard_ids)))
                .order_by(SliceSequence.shard_id, SliceSequence.index)
            )
        )

    def sequences(self, model_id: uuid.UUID) -> list[SliceSequence]:
        return list(
            self.session.scalars(
                sa.select(SliceSequence)
                .join(Shard, Shard.id == SliceSequence.shard_id)
                .where(Shard.model_id == model_id)
                .order_by(Shard.index, SliceSequence.index)
            )
        )
