"""The stored pass statistics of trained chains (``layer_statistics``)."""

from __future__ import annotations

import sqlalchemy as sa

from service.db.models import Layer, LayerState, LayerStatistics
from service.db.repositories.base import Repository

#: While its layer is in one of these states a chain's statistics may still serve a pass: an
#: active layer for the next deletion, an invalidated one for the pass of the deletion that cut
#: it. A superseded or discarded layer is never edited again.
USABLE = (LayerState.active, LayerState.invalidated)


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

    def collect(self, *, limit: int = 100) -> list[str]:
        """Forget the statistics no pass can use any more (their layer left ``USABLE``); returns
        the artifacts no remaining row names, for the caller to delete from the store."""
        stale = list(
            self.session.scalars(
                sa.select(LayerStatistics)
                .join(Layer, Layer.id == LayerStatistics.layer_id)
                .where(Layer.state.not_in(USABLE))
                .limit(limit)
            )
        )
        refs = {row.artifact_ref for row in stale}
        for row in stale:
            self.session.delete(row)
        self.session.flush()
        still = set(
            self.session.scalars(
                sa.select(LayerStatistics.artifact_ref).where(
                    LayerStatistics.artifact_ref.in_(refs)
                )
            )
        )
        return sorted(refs - still)
