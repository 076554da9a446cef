"""A tenant's webhook endpoints and their deliveries. Flushes, never commits.

URLs are checked against the policy of ``urls`` at registration (a 422 problem); secrets are
made here and returned once. Rotation keeps the previous secret signing for the overlap.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.orm import Session

from service.db import after_commit
from service.db.models import DeliveryState, Webhook, WebhookDelivery
from service.db.models.base import utcnow
from service.db.repositories import WebhookRepository
from service.errors import ConflictError, InvalidInputError
from service.webhooks import events, signing, urls
from service.webhooks.schemas import (
    AttemptPublic,
    DeliveryDetail,
    DeliveryPublic,
    WebhookCreate,
    WebhookPublic,
    WebhookSecretPublic,
)


class InvalidWebhookUrlError(InvalidInputError):
    title = "Webhook URL refused"
    slug = "webhook-url-refused"


class TooManyWebhooksError(ConflictError):
    title = "Too many webhook endpoints"
    slug = "webhook-limit-reached"


def webhook_public(webhook: Webhook) -> WebhookPublic:
    return WebhookPublic(
        id=webhook.id,
        url=webhook.url,
        events=webhook.events,
        description=webhook.description,
        created_at=webhook.created_at,
        secret_rotated_at=webhook.secret_rotated_at,
    )


def _with_secret(webhook: Webhook) -> WebhookSecretPublic:
    return WebhookSecretPublic(**webhook_public(webhook).model_dump(), secret=webhook.secret)


def check_url(
    url: str,
    *,
    production: bool,
    resolver: urls.Resolver | None = None,
    timeout_s: float | None = None,
) -> None:
    try:
        urls.check(
            url,
            production=production,
            resolver=resolver or urls.system_resolver,
            timeout_s=timeout_s,
        )
    except urls.ResolveTimeoutError:
        raise InvalidWebhookUrlError("`url` refused: its host did not resolve in time") from None
    except urls.UrlRefusedError as error:
        raise InvalidWebhookUrlError(f"`url` refused: {error}") from None


def create_webhook(
    session: Session,
    tenant_id: uuid.UUID,
    body: WebhookCreate,
    *,
    production: bool,
    max_endpoints: int,
    resolver: urls.Resolver | None = None,
    timeout_s: float | None = None,
) -> WebhookSecretPublic:
    """Register the endpoint: its URL checked (a 422), the tenant under ``max_endpoints`` live
    ones (a 409: each endpoint is a delivery per event, and a tenant's endpoints share its
    dispatcher slots)."""
    check_url(body.url, production=production, resolver=resolver, timeout_s=timeout_s)
    webhooks = WebhookRepository.from_session(session)
    live = webhooks.live_count(tenant_id)
    if live >= max_endpoints:
        raise TooManyWebhooksError(
            f"the tenant has {live} webhook endpoints, the most UNLEARN_WEBHOOK_MAX_ENDPOINTS "
            f"({max_endpoints}) allows; delete one first"
        )
    webhook = webhooks.add(
        tenant_id,
        url=body.url,
        events=list(dict.fromkeys(body.events)),
        description=body.description,
        secret=signing.new_secret(),
    )
    return _with_secret(webhook)


def list_webhooks(session: Session, tenant_id: uuid.UUID) -> list[WebhookPublic]:
    return [webhook_public(w) for w in WebhookRepository.from_session(session).of_tenant(tenant_id)]


def get_webhook(session: Session, tenant_id: uuid.UUID, webhook_id: uuid.UUID) -> WebhookPublic:
    return webhook_public(
        WebhookRepository.from_session(session).get(webhook_id, tenant_id=tenant_id)
    )


def delete_webhook(session: Session, tenant_id: uuid.UUID, webhook_id: uuid.UUID) -> None:
    """Delete the endpoint; its pending deliveries are cancelled (`failed`)."""
    webhooks = WebhookRepository.from_session(session)
    webhooks.delete(webhooks.get(webhook_id, tenant_id=tenant_id))


def rotate_secret(
    session: Session, tenant_id: uuid.UUID, webhook_id: uuid.UUID, *, overlap_s: float
) -> WebhookSecretPublic:
    """A new secret; the current one keeps signing (a second `v1=`) for ``overlap_s``."""
    webhook = WebhookRepository.from_session(session).get(webhook_id, tenant_id=tenant_id)
    now = utcnow()
    if overlap_s > 0:
        webhook.previous_secret = webhook.secret
        webhook.previous_secret_until = now + timedelta(seconds=overlap_s)
    else:
        webhook.previous_secret = None
        webhook.previous_secret_until = None
    webhook.secret = signing.new_secret()
    webhook.secret_rotated_at = now
    return _with_secret(webhook)


def delivery_public(delivery: WebhookDelivery) -> DeliveryPublic:
    pending = delivery.state is DeliveryState.pending
    return DeliveryPublic(
        id=delivery.id,
        webhook_id=delivery.webhook_id,
        event_id=delivery.event.id,
        event_type=delivery.event.type,
        state=delivery.state.value,
        attempt_count=delivery.attempt_count,
        next_attempt_at=delivery.next_attempt_at if pending else None,
        last_status_code=delivery.last_status_code,
        created_at=delivery.created_at,
        delivered_at=delivery.delivered_at,
    )


def list_deliveries(
    session: Session, tenant_id: uuid.UUID, webhook_id: uuid.UUID, *, limit: int
) -> list[DeliveryPublic]:
    webhooks = WebhookRepository.from_session(session)
    webhook = webhooks.get(webhook_id, tenant_id=tenant_id)
    return [delivery_public(d) for d in webhooks.deliveries_of(webhook.id, limit=limit)]


def recent_deliveries(
    session: Session, tenant_id: uuid.UUID, *, limit: int
) -> list[DeliveryPublic]:
    """The tenant's latest deliveries over all its endpoints (the dashboard's list)."""
    webhooks = WebhookRepository.from_session(session)
    return [delivery_public(d) for d in webhooks.recent_of_tenant(tenant_id, limit=limit)]


def get_delivery(session: Session, tenant_id: uuid.UUID, delivery_id: uuid.UUID) -> DeliveryDetail:
    webhooks = WebhookRepository.from_session(session)
    delivery = webhooks.delivery(delivery_id, tenant_id=tenant_id)
    attempts = [
        AttemptPublic(at=a.at, status_code=a.status_code, error=a.error, duration_ms=a.duration_ms)
        for a in webhooks.attempts(delivery.id)
    ]
    return DeliveryDetail(**delivery_public(delivery).model_dump(), attempts=attempts)


def redeliver(session: Session, tenant_id: uuid.UUID, delivery_id: uuid.UUID) -> DeliveryPublic:
    """Queue the delivery again, due now, with a fresh attempt budget (its attempts so far stay
    listed). A delivery in flight is left to its dispatcher; a deleted endpoint's is a 409."""
    webhooks = WebhookRepository.from_session(session)
    delivery = webhooks.get_for_update(webhooks.delivery(delivery_id, tenant_id=tenant_id).id)
    assert delivery is not None
    if webhooks.webhook(delivery.webhook_id).deleted_at is not None:
        raise ConflictError("the delivery's webhook was deleted")
    now = utcnow()
    in_flight = delivery.leased_until is not None and delivery.leased_until > now
    if not in_flight:
        delivery.state = DeliveryState.pending
        delivery.next_attempt_at = now
        delivery.delivered_at = None
        delivery.attempt_count = 0
        after_commit.deliver(session)
    return delivery_public(delivery)


def ping(session: Session, tenant_id: uuid.UUID, webhook_id: uuid.UUID) -> DeliveryPublic:
    """Queue a signed ``webhook.ping`` to the endpoint alone (404 for a deleted one)."""
    webhook = WebhookRepository.from_session(session).get(webhook_id, tenant_id=tenant_id)
    return delivery_public(events.ping(session, webhook))


def forget_old_events(session: Session, retention_s: float) -> int:
    """Housekeeping: events older than the retention that are no longer pending anywhere go,
    with their deliveries and attempts (a pending one stays until it is delivered or fails)."""
    cutoff = utcnow() - timedelta(seconds=retention_s)
    return WebhookRepository.from_session(session).forget_before(cutoff)
