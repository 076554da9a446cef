"""Aggregates for /metrics and the dashboard: counts and duration histograms, computed by the
database so that every API process reports the same figures whichever process did the work."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.sql.expression import ColumnElement

from service.db.models import (
    DeletionRequest,
    DeletionStatus,
    DeliveryState,
    Job,
    JobKind,
    JobStatus,
    Layer,
    Model,
    QualityMeasurement,
    Shard,
    SliceSequence,
    WebhookDelivery,
)
from service.db.repositories.base import Repository
from service.db.repositories.jobs import IS_WORK, LIVE_STATUSES
from service.db.repositories.lineage import LineageRepository, choose_served, served_shares
from service.db.sql import seconds_between


@dataclass(frozen=True)
class Histogram:
    """Cumulative counts per upper bound (``le``), as Prometheus wants them."""

    buckets: list[tuple[float, int]]
    count: int
    total: float


@dataclass(frozen=True)
class DeletionTimes:
    received_at: datetime
    deactivated_at: datetime | None
    completed_at: datetime | None


class MetricsRepository(Repository):
    def deletions_by_status(self, tenant_id: uuid.UUID | None = None) -> dict[DeletionStatus, int]:
        query = sa.select(DeletionRequest.status, sa.func.count())
        if tenant_id is not None:
            query = query.where(DeletionRequest.tenant_id == tenant_id)
        rows = self.session.execute(query.group_by(DeletionRequest.status)).all()
        return {status: n for status, n in rows}

    def deletion_phase(
        self, end: Literal["deactivated_at", "completed_at"], bounds: Sequence[float]
    ) -> Histogram:
        """Seconds from receipt to ``end`` (``deactivated_at`` or ``completed_at``)."""
        column: ColumnElement[datetime] = getattr(DeletionRequest, end)
        return self._histogram(
            seconds_between(DeletionRequest.received_at, column), bounds, column.is_not(None)
        )

    def job_seconds(self, kind: JobKind, bounds: Sequence[float]) -> Histogram:
        """Run time of the succeeded jobs of ``kind``, from start to finish."""
        return self._histogram(
            seconds_between(Job.started_at, Job.finished_at),
            bounds,
            Job.kind == kind,
            Job.status == JobStatus.succeeded,
            Job.started_at.is_not(None),
            Job.finished_at.is_not(None),
        )

    def _histogram(
        self, seconds: ColumnElement[float], bounds: Sequence[float], *where: Any
    ) -> Histogram:
        counts = [sa.func.sum(sa.case((seconds <= bound, 1), else_=0)) for bound in bounds]
        row = self.session.execute(
            sa.select(sa.func.count(), sa.func.sum(seconds), *counts).where(*where)
        ).one()
        count, total, *cumulative = row
        return Histogram(
            buckets=[(b, int(n or 0)) for b, n in zip(bounds, cumulative, strict=True)],
            count=int(count),
            total=float(total or 0.0),
        )

    def live_jobs(self) -> dict[tuple[JobKind, JobStatus], int]:
        """Queued and running jobs that occupy workers."""
        rows = self.session.execute(
            sa.select(Job.kind, Job.status, sa.func.count())
            .where(Job.status.in_(LIVE_STATUSES), IS_WORK)
            .group_by(Job.kind, Job.status)
        ).all()
        return {(kind, status): n for kind, status, n in rows}

    def webhook_deliveries(self) -> tuple[dict[DeliveryState, int], datetime | None]:
        """Webhook deliveries per state (whichever process delivers them), and when the oldest
        one still pending was created (None: none pending)."""
        rows = self.session.execute(
            sa.select(
                WebhookDelivery.state, sa.func.count(), sa.func.min(WebhookDelivery.created_at)
            ).group_by(WebhookDelivery.state)
        ).all()
        oldest = next((first for state, _, first in rows if state is DeliveryState.pending), None)
        return {state: n for state, n, _ in rows}, oldest

    def layers_by_model(self) -> dict[tuple[uuid.UUID, str], int]:
        rows = self.session.execute(
            sa.select(Shard.model_id, Layer.state, sa.func.count())
            .join(SliceSequence, SliceSequence.id == Layer.sequence_id)
            .join(Shard, Shard.id == SliceSequence.shard_id)
            .group_by(Shard.model_id, Layer.state)
        ).all()
        return {(model_id, state.value): n for model_id, state, n in rows}

    def availability(self) -> list[tuple[uuid.UUID, float, float]]:
        """Per model: the share of its shards that answer, and the mean served depth / L."""
        lineage = LineageRepository.from_session(self.session)
        out = []
        for model in self.session.scalars(sa.select(Model).order_by(Model.created_at)):
            choice = choose_served(lineage.prefixes(model.id), model.n_shards)
            out.append((model.id, *served_shares(choice, model.n_slices)))
        return out

    def latest_measurements(self) -> list[tuple[uuid.UUID, str, float | None, int]]:
        """Per measured model: its latest measurement's metric and value, and how many serving
        generations the model moved since."""
        latest = (
            sa.select(sa.func.max(QualityMeasurement.id))
            .group_by(QualityMeasurement.model_id)
            .scalar_subquery()
        )
        rows = self.session.execute(
            sa.select(
                QualityMeasurement.model_id,
                QualityMeasurement.metric,
                QualityMeasurement.value,
                Model.serving_generation - QualityMeasurement.serving_generation,
            )
            .join(Model, Model.id == QualityMeasurement.model_id)
            .where(QualityMeasurement.id.in_(latest))
            .order_by(Model.created_at)
        )
        return [(m, metric, value, int(behind)) for m, metric, value, behind in rows]

    def deletions_since(self, tenant_id: uuid.UUID, since: datetime) -> list[DeletionTimes]:
        """A tenant's requests received or completed since ``since`` (for throughput charts)."""
        rows = self.session.execute(
            sa.select(
                DeletionRequest.received_at,
                DeletionRequest.deactivated_at,
                DeletionRequest.completed_at,
            ).where(
                DeletionRequest.tenant_id == tenant_id,
                sa.or_(DeletionRequest.received_at >= since, DeletionRequest.completed_at >= since),
            )
        ).all()
        return [DeletionTimes(*row) for row in rows]
