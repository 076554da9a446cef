"""The stored pass statistics of trained chains (``layer_statistics``)."""

from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm

from service.db.models import Layer, LayerState, LayerStatistics
from service.db.repositories.base import Repository

#: A chain's statistics serve a pass on it while its top layer is active (the next deletion's
#: pass) or invalidated with nothing served at its stage yet (the pass of the deletion that cut
#: it). Once a retrain or a pass serves that stage, or the layer was superseded or discarded,
#: no pass will read them again.


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
        """Forget the statistics no pass can read any more (see above); returns the artifacts no
        remaining row names, for the caller to delete from the store."""
        replacement = sa.orm.aliased(Layer)
        replaced = (
            sa.select(replacement.id)
            .where(
                replacement.sequence_id == Layer.sequence_id,
                replacement.position == Layer.position,
                replacement.state == LayerState.active,
            )
            .exists()
        )
        stale = list(
            self.session.scalars(
                sa.select(LayerStatistics)
                .join(Layer, Layer.id == LayerStatistics.layer_id)
                .where(
                    (Layer.state.in_((LayerState.superseded, LayerState.discarded)))
                    | ((Layer.state == LayerState.invalidated) & replaced)
                )
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
