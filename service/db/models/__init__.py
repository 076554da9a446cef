"""ORM models of the lineage database; importing this package registers every table."""

from service.db.models.artifacts import CollectedArtifact
from service.db.models.audit import AuditCheckpoint, AuditEntry, AuditRef
from service.db.models.base import Base
from service.db.models.base_models import BaseModel, Modality
from service.db.models.deletions import (
    DeletionItem,
    DeletionJob,
    DeletionRequest,
    DeletionStatus,
    ItemOutcome,
)
from service.db.models.jobs import Job, JobKind, JobStatus
from service.db.models.lineage import (
    AUTO_METHOD,
    Layer,
    LayerDeletion,
    LayerInvalidation,
    LayerSliceVersion,
    LayerState,
    LayerStatistics,
    Model,
    ModelStatus,
    Shard,
    Slice,
    SliceSequence,
    Task,
    UnlearningPolicy,
)
from service.db.models.outbox import OutboxMessage
from service.db.models.quality import PassGrade, QualityMeasurement
from service.db.models.samples import KeptSamples, Sample, SamplePayload, Split
from service.db.models.tenancy import (
    ApiKey,
    DashboardSession,
    Role,
    Tenant,
    TenantOldSecret,
    TenantSecret,
)
from service.db.models.webhooks import (
    DeliveryState,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
)
from service.db.models.workers import WorkerPresence

__all__ = [
    "AUTO_METHOD",
    "ApiKey",
    "AuditCheckpoint",
    "AuditEntry",
    "AuditRef",
    "Base",
    "BaseModel",
    "CollectedArtifact",
    "DashboardSession",
    "DeletionItem",
    "DeletionJob",
    "DeletionRequest",
    "DeletionStatus",
    "DeliveryState",
    "ItemOutcome",
    "Job",
    "JobKind",
    "JobStatus",
    "KeptSamples",
    "Layer",
    "LayerDeletion",
    "LayerInvalidation",
    "LayerSliceVersion",
    "LayerState",
    "LayerStatistics",
    "Modality",
    "Model",
    "ModelStatus",
    "OutboxMessage",
    "PassGrade",
    "QualityMeasurement",
    "Role",
    "Sample",
    "SamplePayload",
    "Shard",
    "Slice",
    "SliceSequence",
    "Split",
    "Task",
    "Tenant",
    "TenantOldSecret",
    "TenantSecret",
    "UnlearningPolicy",
    "Webhook",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEvent",
    "WorkerPresence",
]
