"""Request and response bodies of the webhook endpoints; a secret appears only in the 201 of
its creation or rotation."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.webhooks.events import EventType

DeliveryStateName = Literal["pending", "delivered", "failed"]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=2048,
        description="Where events are POSTed: `https` (also `http` and loopback in "
        "development); never a private, loopback, link-local or transition (6to4, NAT64, "
        "Teredo) address in production.",
    )
    events: list[EventType] = Field(min_length=1, max_length=20)
    description: str | None = Field(None, max_length=500)


class WebhookPublic(BaseModel):
    id: uuid.UUID
    url: str
    events: list[str]
    description: str | None
    created_at: datetime
    secret_rotated_at: datetime | None


class WebhookSecretPublic(WebhookPublic):
    secret: str = Field(
        description="`whsec_<base64>`: the signing secret of `webhook-signature` (Standard "
        "Webhooks) and `Unlearn-Signature`; shown this once only."
    )


class AttemptPublic(BaseModel):
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryPublic(BaseModel):
    id: uuid.UUID
    webhook_id: uuid.UUID
    event_id: str
    event_type: str
    state: DeliveryStateName
    attempt_count: int
    next_attempt_at: datetime | None = Field(
        description="When the next attempt is due (null once delivered or failed)."
    )
    last_status_code: int | None
    created_at: datetime
    delivered_at: datetime | None


class DeliveryDetail(DeliveryPublic):
    attempts: list[AttemptPublic]
