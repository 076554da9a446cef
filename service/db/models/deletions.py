"""Deletion requests and their items: counts, hashes and phase timestamps, no personal data."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from service.db.hashing import HashScheme
from service.db.models.base import Base, BigIntId, Sha256Hex, UuidPk, str_enum, utcnow


class DeletionStatus(StrEnum):
    received = "received"
    deactivated = "deactivated"
    approximated = "approximated"
    retraining = "retraining"
    completed = "completed"
    failed = "failed"


class ItemOutcome(StrEnum):
    deleted = "deleted"
    already_deleted = "already_deleted"
    unknown = "unknown"


class DeletionRequest(UuidPk, Base):
    __tablename__ = "deletion_requests"

    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id"))
    model_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("models.id"), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(255))
    body_hash: Mapped[str] = mapped_column(Sha256Hex)
    subject_hash: Mapped[str | None] = mapped_column(Sha256Hex)
    # How body_hash, subject_hash and the items' external_id_hash were made. The server
    # default labels rows written by code older than keyed hashes (before the migration, or by
    # an API process not yet upgraded), which stored plain SHA-256.
    hash_scheme: Mapped[HashScheme] = mapped_column(
        str_enum(HashScheme),
        default=HashScheme.hmac_sha256,
        server_default=HashScheme.sha256.value,
    )
    # The version of the tenant's identifier secret that made the keyed hashes above (a
    # rotation keeps the old versions, so that this request stays verifiable).
    secret_version: Mapped[int] = mapped_column(default=1, server_default="1")
    status: Mapped[DeletionStatus] = mapped_column(
        str_enum(DeletionStatus), default=DeletionStatus.received
    )
    partial: Mapped[bool] = mapped_column(default=False)
    failure_reason: Mapped[str | None] = mapped_column(sa.Text)
    # The model's serving_generation right after this request's deactivation committed.
    serving_generation: Mapped[int | None] = mapped_column(sa.BigInteger)
    n_requested: Mapped[int] = mapped_column(default=0)
    n_deleted: Mapped[int] = mapped_column(default=0)
    n_already_deleted: Mapped[int] = mapped_column(default=0)
    n_unknown: Mapped[int] = mapped_column(default=0)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    deactivated_at: Mapped[datetime | None]
    approximated_at: Mapped[datetime | None]
    retraining_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    # Under an approximate policy the payloads wait for the pass, at most until this deadline.
    payloads_purge_by: Mapped[datetime | None]
    payloads_purged_at: Mapped[datetime | None]

    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "idempotency_key"),
        sa.Index("ix_deletion_requests_tenant_id_received_at", "tenant_id", "received_at"),
    )


class DeletionItem(Base):
    __tablename__ = "deletion_items"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    request_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("deletion_requests.id", ondelete="CASCADE"), index=True
    )
    sample_id: Mapped[int | None] = mapped_column(
        BigIntId, sa.ForeignKey("samples.id", ondelete="SET NULL"), index=True
    )
    external_id_hash: Mapped[str] = mapped_column(Sha256Hex)
    # Kept only for ids that matched no sample, so that the request can report them.
    unknown_external_id: Mapped[str | None] = mapped_column(sa.String(255))
    outcome: Mapped[ItemOutcome] = mapped_column(str_enum(ItemOutcome))


class DeletionJob(Base):
    """A retrain job that a deletion waits for; the deletion completes when all have."""

    __tablename__ = "deletion_jobs"

    request_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("deletion_requests.id", ondelete="CASCADE"), primary_key=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True, index=True
    )
