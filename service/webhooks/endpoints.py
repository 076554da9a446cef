"""``/webhooks`` and ``/webhook-deliveries``: a tenant's endpoints, for its admin keys, and
what was delivered to them. Another tenant's endpoint or delivery is a 404."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from service.api.auth import AdminKey
from service.api.deps import SessionDep, SettingsDep
from service.api.problems import problem_responses
from service.api.ratelimit import AdminWriterKey
from service.webhooks import service
from service.webhooks.schemas import (
    DeliveryDetail,
    DeliveryPublic,
    WebhookCreate,
    WebhookPublic,
    WebhookSecretPublic,
)

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
deliveries_router = APIRouter(prefix="/webhook-deliveries", tags=["webhooks"])
PROBLEMS = problem_responses(401, 403, 404, 409, 413, 422, 429)


@router.post("", status_code=status.HTTP_201_CREATED, responses=PROBLEMS)
def create_webhook(
    body: WebhookCreate, key: AdminWriterKey, session: SessionDep, settings: SettingsDep
) -> WebhookSecretPublic:
    """Register an endpoint for some events; its signing secret is in this answer only."""
    return service.create_webhook(
        session,
        key.tenant_id,
        body,
        production=settings.production,
        max_endpoints=settings.webhook_max_endpoints,
        timeout_s=settings.webhook_timeout_s,
    )


@router.get("", responses=PROBLEMS)
def list_webhooks(key: AdminKey, session: SessionDep) -> list[WebhookPublic]:
    """The tenant's endpoints (never their secrets), oldest first."""
    return service.list_webhooks(session, key.tenant_id)


@router.get("/{webhook_id}", responses=PROBLEMS)
def read_webhook(webhook_id: uuid.UUID, key: AdminKey, session: SessionDep) -> WebhookPublic:
    """One endpoint (never its secret)."""
    return service.get_webhook(session, key.tenant_id, webhook_id)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, responses=PROBLEMS)
def delete_webhook(webhook_id: uuid.UUID, key: AdminWriterKey, session: SessionDep) -> Response:
    """Delete an endpoint; its pending deliveries are cancelled."""
    service.delete_webhook(session, key.tenant_id, webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{webhook_id}/rotate", status_code=status.HTTP_201_CREATED, responses=PROBLEMS)
def rotate_secret(
    webhook_id: uuid.UUID, key: AdminWriterKey, session: SessionDep, settings: SettingsDep
) -> WebhookSecretPublic:
    """A new signing secret; the previous one signs too (a second `v1=`) during the overlap."""
    return service.rotate_secret(
        session, key.tenant_id, webhook_id, overlap_s=settings.webhook_secret_overlap_s
    )


@router.post("/{webhook_id}/ping", status_code=status.HTTP_202_ACCEPTED, responses=PROBLEMS)
def ping_webhook(
    webhook_id: uuid.UUID, key: AdminWriterKey, session: SessionDep, response: Response
) -> DeliveryPublic:
    """Send the endpoint a signed `webhook.ping` event (whatever it subscribed to), to test the
    receiver; follow the delivery at its `Location`."""
    delivery = service.ping(session, key.tenant_id, webhook_id)
    response.headers["Location"] = f"/webhook-deliveries/{delivery.id}"
    return delivery


@router.get("/{webhook_id}/deliveries", responses=PROBLEMS)
def list_deliveries(
    webhook_id: uuid.UUID,
    key: AdminKey,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[DeliveryPublic]:
    """The endpoint's deliveries, newest first."""
    return service.list_deliveries(session, key.tenant_id, webhook_id, limit=limit)


@deliveries_router.get("/{delivery_id}", responses=PROBLEMS)
def read_delivery(delivery_id: uuid.UUID, key: AdminKey, session: SessionDep) -> DeliveryDetail:
    """One delivery with its attempts."""
    return service.get_delivery(session, key.tenant_id, delivery_id)


@deliveries_router.post(
    "/{delivery_id}/redeliver", status_code=status.HTTP_202_ACCEPTED, responses=PROBLEMS
)
def redeliver(delivery_id: uuid.UUID, key: AdminWriterKey, session: SessionDep) -> DeliveryPublic:
    """Queue a delivery again, due now (a delivered or failed one too)."""
    return service.redeliver(session, key.tenant_id, delivery_id)
