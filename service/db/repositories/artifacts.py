"""Who names an artifact: the reference count artifact collection decides by, and its records.

Artifacts are content-addressed, so one reference may be named by several rows (equal bytes:
a layer retrained on identical data, two models trained alike): references are counted by
artifact over every layer of every model. An artifact is **live** while any of these names it:

- a layer that is ``active``, or ``training`` with its job still live (or with no job): a
  running job's output not yet activated;
- a ``layer_statistics`` row;
- a layer a live job will read (:meth:`ArtifactRepository.pinned_layer_ids`): the chains an
  approximate job planned, the valid prefix a running (re)train resumes from.

Everything else (``invalidated``, ``superseded``, ``discarded`` layers, ``training`` layers of
a finished job) is dead, and its artifact is collected once no live row names it.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable
from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm

from service.db.models import (
    CollectedArtifact,
    DeletionRequest,
    Job,
    JobKind,
    JobStatus,
    Layer,
    LayerDeletion,
    LayerInvalidation,
    LayerState,
    LayerStatistics,
    Shard,
    SliceSequence,
)
from service.db.models.base import utcnow
from service.db.models.job_params import ApproximateParams, SequenceParams
from service.db.repositories.base import Repository
from service.db.repositories.jobs import LIVE_STATUSES

#: PostgreSQL advisory lock (two-key form: its own key space) that orders collection and the
#: transactions that record new references.
LOCK_KEY = (0x756E6C72, 1)


def _named_live(
    ref: sa.orm.InstrumentedAttribute[str | None], pinned: Collection[int]
) -> sa.Exists:
    """True when a live layer names ``ref``."""
    holder = sa.orm.aliased(Layer)
    job = sa.orm.aliased(Job)
    live = sa.or_(
        holder.state == LayerState.active,
        sa.and_(
            holder.state == LayerState.training,
            sa.or_(holder.job_id.is_(None), job.status.in_(LIVE_STATUSES)),
        ),
    )
    if pinned:
        live = sa.or_(live, holder.id.in_(list(pinned)))
    return (
        sa.select(holder.id)
        .outerjoin(job, job.id == holder.job_id)
        .where(holder.artifact_ref == ref, live)
        .exists()
    )


def _named_by_statistics(ref: sa.orm.InstrumentedAttribute[str | None]) -> sa.Exists:
    return sa.select(LayerStatistics.layer_id).where(LayerStatistics.artifact_ref == ref).exists()


class ArtifactRepository(Repository):
    def lock(self, *, exclusive: bool) -> None:
        """Order collection against new references: the collector holds this exclusively while
        it decides and deletes; a transaction that records rows naming artifacts (or pins a
        prefix) shares it, first thing. On SQLite every transaction already holds the database's
        write lock (BEGIN IMMEDIATE), which orders them the same way."""
        if self.dialect == "postgresql":
            name = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
            self.session.execute(sa.select(getattr(sa.func, name)(*LOCK_KEY)))

    def pinned_layer_ids(self) -> set[int]:
        """The layers live jobs will read: the chains an approximate job planned (while it runs,
        or is queued with its request's payloads still there to read: once they are purged, by
        its deadline or the request's completion, the pass will edit nothing), and the prefix
        each running (re)train resumes from (recorded when it started)."""
        rows = self.session.execute(
            sa.select(Job.kind, Job.status, Job.params).where(
                Job.status.in_(LIVE_STATUSES),
                sa.or_(Job.kind == JobKind.approximate, Job.status == JobStatus.running),
            )
        ).all()
        passes = [
            (status, ApproximateParams.load(params))
            for kind, status, params in rows
            if kind is JobKind.approximate
        ]
        waiting = {planned.deletion_id for status, planned in passes if status is JobStatus.queued}
        purged = set(
            self.session.scalars(
                sa.select(DeletionRequest.id).where(
                    DeletionRequest.id.in_(list(waiting)),
                    DeletionRequest.payloads_purged_at.is_not(None),
                )
            )
        )
        pinned: set[int] = set()
        for kind, _, params in rows:
            if kind is not JobKind.approximate:
                pinned.update(SequenceParams.load(params).prefix)
        for status, planned in passes:
            if status is JobStatus.running or planned.deletion_id not in purged:
                for sequence in planned.sequences:
                    pinned.update(sequence.chain)
        return pinned

    def unreferenced(self, pinned: Collection[int], *, limit: int) -> list[str]:
        """Artifacts that layers name but no live row does, and that are not collected yet."""
        collected = (
            sa.select(CollectedArtifact.artifact_ref)
            .where(CollectedArtifact.artifact_ref == Layer.artifact_ref)
            .exists()
        )
        refs = self.session.scalars(
            sa.select(Layer.artifact_ref)
            .where(
                Layer.artifact_ref.is_not(None),
                Layer.state != LayerState.active,
                ~collected,
                ~_named_live(Layer.artifact_ref, pinned),
                ~_named_by_statistics(Layer.artifact_ref),
            )
            .distinct()
            .order_by(Layer.artifact_ref)
            .limit(limit)
        )
        return [ref for ref in refs if ref is not None]

    def live_among(
        self, refs: Iterable[str], pinned: Collection[int], *, besides: Collection[int] = ()
    ) -> set[str]:
        """Of these artifacts, those a live layer or a statistics row names (other than the
        statistics of the layers ``besides``: the stale ones being collected)."""
        wanted = list(set(refs))
        if not wanted:
            return set()
        named_by_layer = self.session.scalars(
            sa.select(Layer.artifact_ref)
            .where(Layer.artifact_ref.in_(wanted), _named_live(Layer.artifact_ref, pinned))
            .distinct()
        )
        named_by_statistics = self.session.scalars(
            sa.select(LayerStatistics.artifact_ref).where(
                LayerStatistics.artifact_ref.in_(wanted),
                LayerStatistics.layer_id.not_in(list(besides)),
            )
        )
        return {ref for ref in [*named_by_layer, *named_by_statistics] if ref is not None}

    def named_among(self, refs: Iterable[str]) -> set[str]:
        """Of these artifacts, those any layer (whatever its state) or statistics row names: the
        rest are files no job ever recorded."""
        wanted = list(set(refs))
        if not wanted:
            return set()
        by_layers = self.session.scalars(
            sa.select(Layer.artifact_ref).where(Layer.artifact_ref.in_(wanted)).distinct()
        )
        by_statistics = self.session.scalars(
            sa.select(LayerStatistics.artifact_ref).where(LayerStatistics.artifact_ref.in_(wanted))
        )
        return {ref for ref in [*by_layers, *by_statistics] if ref is not None}

    def holders(self, refs: Iterable[str]) -> list[tuple[str, int, uuid.UUID]]:
        """(artifact, layer id, model id) of every layer naming one of these artifacts."""
        rows = self.session.execute(
            sa.select(Layer.artifact_ref, Layer.id, Shard.model_id)
            .join(SliceSequence, SliceSequence.id == Layer.sequence_id)
            .join(Shard, Shard.id == SliceSequence.shard_id)
            .where(Layer.artifact_ref.in_(list(set(refs))))
            .order_by(Layer.id)
        )
        return [(ref, layer_id, model_id) for ref, layer_id, model_id in rows if ref is not None]

    def models_of(self, layer_ids: Iterable[int]) -> dict[int, uuid.UUID]:
        rows = self.session.execute(
            sa.select(Layer.id, Shard.model_id)
            .join(SliceSequence, SliceSequence.id == Layer.sequence_id)
            .join(Shard, Shard.id == SliceSequence.shard_id)
            .where(Layer.id.in_(list(set(layer_ids))))
        )
        return {layer_id: model_id for layer_id, model_id in rows}

    def deletions_of(self, layer_ids: Iterable[int]) -> dict[int, set[uuid.UUID]]:
        """Per layer, the deletion requests it concerns: the one that invalidated it, and those
        an approximate layer unlearned."""
        ids = list(set(layer_ids))
        found: dict[int, set[uuid.UUID]] = defaultdict(set)
        for link in (LayerInvalidation, LayerDeletion):
            rows = self.session.execute(
                sa.select(link.layer_id, link.request_id).where(link.layer_id.in_(ids))
            )
            for layer_id, request_id in rows:
                found[layer_id].add(request_id)
        return dict(found)

    def mark_collected(self, refs: Iterable[str]) -> datetime:
        """Record that these artifacts were deleted from the store; returns when."""
        now = utcnow()
        self.session.add_all(CollectedArtifact(artifact_ref=ref, collected_at=now) for ref in refs)
        self.session.flush()
        return now

    def uncollect(self, refs: Iterable[str]) -> int:
        """These artifacts are stored again (a writer recorded equal bytes): forget that they
        were collected. Returns how many had been."""
        result = self.session.execute(
            sa.delete(CollectedArtifact).where(CollectedArtifact.artifact_ref.in_(list(set(refs))))
        )
        return int(getattr(result, "rowcount", 0) or 0)

    def collected_at(self, refs: Iterable[str]) -> dict[str, datetime]:
        """When each of these artifacts was deleted from the store (absent: still stored)."""
        rows = self.session.execute(
            sa.select(CollectedArtifact.artifact_ref, CollectedArtifact.collected_at).where(
                CollectedArtifact.artifact_ref.in_(list(set(refs)))
            )
        )
        return {ref: at for ref, at in rows}
