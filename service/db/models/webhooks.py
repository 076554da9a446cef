"""Webhooks: a tenant's endpoints, the events written with the changes they report, and one
delivery (with its attempts) per event and subscribed endpoint.

An endpoint's secret is stored in clear: the dispatcher needs it to sign (HMAC). No API shows
it after the 201 that created or rotated it, and no log prints it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.db.models.base import Base, BigIntId, CreatedAt, Json, UuidPk, str_enum, utcnow


class DeliveryState(StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"


class Webhook(UuidPk, CreatedAt, Base):
    __tablename__ = "webhooks"

    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id"), index=True)
    url: Mapped[str] = mapped_column(sa.String(2048))
    events: Mapped[list[str]] = mapped_column(Json)
    description: Mapped[str | None] = mapped_column(sa.String(500))
    secret: Mapped[str] = mapped_column(sa.String(100))
    # After a rotation the previous secret signs too, until previous_secret_until.
    previous_secret: Mapped[str | None] = mapped_column(sa.String(100))
    previous_secret_until: Mapped[datetime | None]
    secret_rotated_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]  # kept for its deliveries' history; never delivered to


class WebhookEvent(Base):
    """One event, written in the transaction of the change it reports. ``seq`` orders events
    as they occurred; ``body`` is the exact JSON every delivery of it sends (public fields
    only: never sample text, identifiers or their hashes)."""

    __tablename__ = "webhook_events"

    seq: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(sa.String(40), unique=True)  # evt_<32 hex>
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id"), index=True)
    type: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    body: Mapped[str] = mapped_column(sa.Text)


class WebhookDelivery(UuidPk, CreatedAt, Base):
    """An event for one endpoint: `pending` until a 2xx (`delivered`) or the last attempt
    (`failed`). A dispatcher claims it by setting ``leased_until`` (and ``lease_id``) in a
    committed transaction before its POST; one that dies mid-POST leaves a lease that ends."""

    __tablename__ = "webhook_deliveries"

    webhook_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("webhooks.id"))
    event_seq: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        sa.ForeignKey("webhook_events.seq"),
        index=True,
    )
    state: Mapped[DeliveryState] = mapped_column(
        str_enum(DeliveryState), default=DeliveryState.pending
    )
    attempt_count: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    leased_until: Mapped[datetime | None]
    lease_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    delivered_at: Mapped[datetime | None]

    event: Mapped[WebhookEvent] = relationship(lazy="joined", innerjoin=True)

    __table_args__ = (
        sa.Index(
            "ix_webhook_deliveries_webhook_id_state_event_seq", "webhook_id", "state", "event_seq"
        ),
        sa.Index("ix_webhook_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
    )


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(sa.Text)
    duration_ms: Mapped[int]
