"""Repositories own every query. Each wraps a session, flushes, and never commits."""

from service.db.repositories.artifacts import ArtifactRepository
from service.db.repositories.audit import AuditRepository
from service.db.repositories.base_models import BaseModelRepository
from service.db.repositories.deletions import DeletionRepository
from service.db.repositories.jobs import JobRepository
from service.db.repositories.kept import KeptSamplesRepository
from service.db.repositories.lineage import LineageRepository
from service.db.repositories.metrics import MetricsRepository
from service.db.repositories.models import ModelRepository
from service.db.repositories.outbox import OutboxRepository
from service.db.repositories.samples import NewSample, SampleRepository
from service.db.repositories.statistics import StatisticsRepository
from service.db.repositories.tenants import (
    ApiKeyRepository,
    DashboardSessionRepository,
    TenantRepository,
)
from service.db.repositories.webhooks import WebhookRepository
from service.db.repositories.workers import WorkerRepository

__all__ = [
    "ApiKeyRepository",
    "ArtifactRepository",
    "AuditRepository",
    "BaseModelRepository",
    "DashboardSessionRepository",
    "DeletionRepository",
    "JobRepository",
    "KeptSamplesRepository",
    "LineageRepository",
    "MetricsRepository",
    "ModelRepository",
    "NewSample",
    "OutboxRepository",
    "SampleRepository",
    "StatisticsRepository",
    "TenantRepository",
    "WebhookRepository",
    "WorkerRepository",
]
