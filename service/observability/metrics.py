"""Prometheus metrics.

Two kinds. What only this process sees (HTTP requests, predictions and their latency) is kept
in process-wide counters. What the workers do (deletion phases, retrains, queues, layers) is
read from the lineage database at scrape time, so every API replica reports the same figures
and nothing is lost when a worker restarts: scrape one replica, or take ``max`` across them.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from threading import Lock

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.db.engine import unit_of_work
from service.db.models import DeletionStatus, DeliveryState, JobKind
from service.db.models.base import utcnow
from service.db.repositories import MetricsRepository
from service.db.repositories.metrics import Histogram as DbHistogram
from service.queues import Queue

log = logging.getLogger(__name__)

#: Upper bounds, in seconds: deactivation is sub-second, completion and retrains take minutes.
DEACTIVATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LONG_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 4 * 3600.0)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

PROCESS_REGISTRY = CollectorRegistry(auto_describe=True)
HTTP_REQUESTS = Counter(
    "unlearn_http_requests",
    "HTTP requests answered by this process, by route template and status.",
    ["method", "route", "status"],
    registry=PROCESS_REGISTRY,
)
HTTP_SECONDS = Histogram(
    "unlearn_http_request_seconds",
    "Time to answer an HTTP request, by route template.",
    ["method", "route"],
    buckets=REQUEST_BUCKETS,
    registry=PROCESS_REGISTRY,
)
PREDICTIONS = Counter(
    "unlearn_predictions",
    "Inputs (texts or images) predicted by this process.",
    registry=PROCESS_REGISTRY,
)
PREDICTION_SECONDS = Histogram(
    "unlearn_prediction_seconds",
    "Time of one predict call (all its inputs), in this process.",
    buckets=REQUEST_BUCKETS,
    registry=PROCESS_REGISTRY,
)
WEBHOOK_ATTEMPTS = Counter(
    "unlearn_webhook_attempts",
    "Webhook delivery attempts made by this process, by outcome: `delivered` (a 2xx), "
    "`retried` (another attempt follows) or `failed` (the last attempt failed).",
    ["outcome"],
    registry=PROCESS_REGISTRY,
)

#: Which queue carries which job kind (service/training and service/approximation send them).
QUEUE_OF_KIND = {
    JobKind.train: Queue.training,
    JobKind.retrain: Queue.training,
    JobKind.approximate: Queue.deletions,
    JobKind.exactness_audit: Queue.training,
    JobKind.measure_quality: Queue.training,
}


@dataclass
class MinuteBucket:
    minute: int  # unix time // 60
    count: int = 0
    seconds: float = 0.0
    worst: float = 0.0


class RecentCalls:
    """Calls per minute over the last hour in this process, per tenant, for the dashboard's
    charts (a tenant's admin sees its own tenant's calls, never another's)."""

    def __init__(self, minutes: int = 60) -> None:
        self._minutes = minutes
        self._buckets: dict[uuid.UUID, deque[MinuteBucket]] = {}
        self._lock = Lock()

    def observe(self, tenant_id: uuid.UUID, seconds: float, *, now: float | None = None) -> None:
        minute = int((time.time() if now is None else now) // 60)
        with self._lock:
            buckets = self._buckets.setdefault(tenant_id, deque(maxlen=self._minutes))
            if not buckets or buckets[-1].minute != minute:
                buckets.append(MinuteBucket(minute))
            bucket = buckets[-1]
            bucket.count += 1
            bucket.seconds += seconds
            bucket.worst = max(bucket.worst, seconds)

    def snapshot(self, tenant_id: uuid.UUID) -> list[MinuteBucket]:
        with self._lock:
            buckets = self._buckets.get(tenant_id, ())
            return [MinuteBucket(b.minute, b.count, b.seconds, b.worst) for b in buckets]


RECENT_PREDICTIONS = RecentCalls()


def observe_prediction(tenant_id: uuid.UUID, texts: int, seconds: float) -> None:
    PREDICTIONS.inc(texts)
    PREDICTION_SECONDS.observe(seconds)
    RECENT_PREDICTIONS.observe(tenant_id, seconds)


class LineageCollector(Collector):
    """Reads the deletion, job and layer figures from the lineage database at each scrape."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "unlearn_lineage_up", "1 when the lineage database answered this scrape."
        )
        try:
            with unit_of_work(self.factory) as session:
                metrics = list(self._read(MetricsRepository.from_session(session)))
        except SQLAlchemyError:
            log.warning("metrics: the lineage database did not answer", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics

    def _read(self, repo: MetricsRepository) -> Iterator[Metric]:
        by_status = repo.deletions_by_status()
        received = CounterMetricFamily(
            "unlearn_deletion_requests", "Deletion requests received (all tenants)."
        )
        received.add_metric([], sum(by_status.values()))
        yield received
        current = GaugeMetricFamily(
            "unlearn_deletions",
            "Deletion requests by their current status.",
            labels=["status"],
        )
        for status in DeletionStatus:
            current.add_metric([status.value], by_status.get(status, 0))
        yield current
        yield _histogram(
            "unlearn_deletion_deactivation_seconds",
            "From a deletion's receipt to its layers being off.",
            repo.deletion_phase("deactivated_at", DEACTIVATION_BUCKETS),
        )
        yield _histogram(
            "unlearn_deletion_completion_seconds",
            "From a deletion's receipt to its exact retrain being served.",
            repo.deletion_phase("completed_at", LONG_BUCKETS),
        )
        yield _histogram(
            "unlearn_retrain_seconds",
            "Run time of succeeded exact retrain jobs (one slice sequence each).",
            repo.job_seconds(JobKind.retrain, LONG_BUCKETS),
        )
        depth = GaugeMetricFamily(
            "unlearn_queue_depth",
            "Live jobs per queue: `queued` wait for a worker, `running` hold one.",
            labels=["queue", "state"],
        )
        live = repo.live_jobs()
        for queue in Queue:
            for state in ("queued", "running"):
                n = sum(
                    count
                    for (kind, status), count in live.items()
                    if QUEUE_OF_KIND[kind] is queue and status.value == state
                )
                depth.add_metric([queue.value, state], n)
        yield depth
        layers = GaugeMetricFamily(
            "unlearn_layers",
            "Layers per model and state (active = valid and servable, invalidated = off).",
            labels=["model_id", "state"],
        )
        for (model_id, state), n in sorted(repo.layers_by_model().items(), key=str):
            layers.add_metric([str(model_id), state], n)
        yield layers
        live_shards = GaugeMetricFamily(
            "unlearn_model_live_shards_ratio",
            "Share of a model's shards that answer (have a valid layer to serve).",
            labels=["model_id"],
        )
        served = GaugeMetricFamily(
            "unlearn_model_served_depth_ratio",
            "Mean served stages / L over a model's shards (1: every shard at full depth).",
            labels=["model_id"],
        )
        for model_id, live_share, depth_share in repo.availability():
            live_shards.add_metric([str(model_id)], live_share)
            served.add_metric([str(model_id)], depth_share)
        yield live_shards
        yield served
        yield from _measured(repo)
        yield from _webhooks(repo)


def _measured(repo: MetricsRepository) -> Iterator[Metric]:
    """Each model's latest measurement on its evaluation split, and how many serving
    generations it lags behind what the model serves (0: it measures what is served)."""
    value = GaugeMetricFamily(
        "unlearn_model_measured_quality",
        "The latest measurement of what a model serves on its evaluation split (accuracy in "
        "percent, mae, or token_loss: the `metric` label).",
        labels=["model_id", "metric"],
    )
    lag = GaugeMetricFamily(
        "unlearn_model_measured_generations_behind",
        "Serving generations between what a model serves and its latest measurement.",
        labels=["model_id"],
    )
    for model_id, metric, measured, behind in repo.latest_measurements():
        if measured is not None:
            value.add_metric([str(model_id), metric], measured)
        lag.add_metric([str(model_id)], behind)
    yield value
    yield lag


def _webhooks(repo: MetricsRepository) -> Iterator[Metric]:
    by_state, oldest = repo.webhook_deliveries()
    deliveries = GaugeMetricFamily(
        "unlearn_webhook_deliveries",
        "Webhook deliveries by state (`pending`, `delivered`, `failed`), whichever process "
        "delivers them; events older than the retention are forgotten with their deliveries.",
        labels=["state"],
    )
    for state in DeliveryState:
        deliveries.add_metric([state.value], by_state.get(state, 0))
    yield deliveries
    lag = GaugeMetricFamily(
        "unlearn_webhook_oldest_pending_seconds",
        "Age of the oldest webhook delivery still pending (0 when none): grows while no "
        "dispatcher runs or an endpoint keeps failing.",
    )
    lag.add_metric([], 0.0 if oldest is None else (utcnow() - oldest).total_seconds())
    yield lag


def _histogram(name: str, documentation: str, histogram: DbHistogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation)
    buckets = [(str(float(bound)), float(n)) for bound, n in histogram.buckets]
    buckets.append(("+Inf", float(histogram.count)))
    family.add_metric([], buckets, sum_value=histogram.total)
    return family


class _ProcessMetrics(Collector):
    def collect(self) -> Iterator[Metric]:
        yield from PROCESS_REGISTRY.collect()


def app_registry(factory: sessionmaker[Session]) -> CollectorRegistry:
    """What one app's ``/metrics`` exposes: this process's counters and the lineage's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ProcessMetrics())
    registry.register(LineageCollector(factory))
    return registry
