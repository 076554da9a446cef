"""The stored pass statistics of trained chains (``layer_statistics``)."""

from __future__ import annotations

from collections.abc import Collection, Iterable

import sqlalchemy as sa

from service.db.models import Layer, LayerState, LayerStatistics
from service.db.repositories.base import Repository

#: A chain's statistics serve a pass on it while its top layer is active (the next deletion's
#: pass) or is in a chain a live approximate job planned (the pass of the deletion that cut it,
#: planned in the deletion's transaction). Once the layer was superseded or discarded, or
#: invalidated with no live pass planned on it, no pass will read them again: they are stale,
#: and artifact collection deletes the row with its artifact (``service.artifacts.collection``).


class StatisticsRepository(Repository):
    def of(self, layer_id: int) -> LayerStatistics | None:
        return self.session.get(LayerStatistics, layer_id)

    def record(self, layer_id: int, artifact_ref: str, sample_count: int) -> None:
        """The statistics of the chain ending at ``layer_id`` (idempotent: a redelivered job
        computes the same bytes)."""
        if self.of(layer_id) is None:
            self.session.add(
                LayerStatistics(
                    layer_id=layer_id, artifact_ref=artifact_ref, sample_count=sample_count
                )
            )
            self.session.flush()

    def stale(self, pinned: Collection[int] = (), *, limit: int = 100) -> list[LayerStatistics]:
        """Statistics no pass can read any more (see above); ``pinned``: the layers live jobs
        will read (``ArtifactRepository.pinned_layer_ids``)."""
        query = (
            sa.select(LayerStatistics)
            .join(Layer, Layer.id == LayerStatistics.layer_id)
            .where(
                Layer.state.in_(
                    (LayerState.superseded, LayerState.discarded, LayerState.invalidated)
                )
            )
            .order_by(LayerStatistics.layer_id)
            .limit(limit)
        )
        if pinned:
            query = query.where(LayerStatistics.layer_id.not_in(list(pinned)))
        return list(self.session.scalars(query))

    def forget(self, rows: Iterable[LayerStatistics]) -> None:
        for row in rows:
            self.session.delete(row)
        self.session.flush()
