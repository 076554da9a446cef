"""Emitting webhook events: in the transaction of the change they report (an outbox), so an
event exists if and only if its change committed, and is delivered after the commit.

Each site calls :func:`emit` in one line with the resource's public view
(:func:`deletion_data`, :func:`model_data`, :func:`audit_data`): ids, statuses, counts and
times, never sample text, identifiers or their hashes, nor free-text errors (an exception's
message could quote data). With no endpoint of the tenant subscribed, nothing is written.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, Final, Literal, get_args

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from service.db import after_commit
from service.db.models import (
    DeletionRequest,
    Job,
    Model,
    Webhook,
    WebhookDelivery,
    WebhookEvent,
)
from service.db.models.base import utcnow
from service.db.models.job_params import AuditParams
from service.db.repositories import WebhookRepository

EventType = Literal[
    "deletion.deactivated",
    "deletion.approximated",
    "deletion.completed",
    "deletion.failed",
    "model.ready",
    "exactness_audit.finished",
]
EVENT_TYPES: Final[tuple[str, ...]] = get_args(EventType)
#: Sent to one endpoint on request (``POST /webhooks/{id}/ping``), whatever it subscribed to.
PING: Final = "webhook.ping"
ENDPOINTS: Final = "webhook_endpoints"  # session.info: a transaction's endpoints per tenant


@event.listens_for(Session, "after_transaction_end")
def _forget_endpoints(session: Session, transaction: SessionTransaction) -> None:
    """The endpoints read by a transaction are its own: the next one reads them again."""
    after_commit.forget(session, transaction, (ENDPOINTS,))


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


def _iso(at: datetime | None) -> str | None:
    return at.isoformat().replace("+00:00", "Z") if at is not None else None


def emit(
    session: Session, tenant_id: uuid.UUID, type_: EventType, data: dict[str, Any]
) -> WebhookEvent | None:
    """Write the event and a pending delivery for each of the tenant's endpoints subscribed to
    it, at the next flush; None (nothing written) when no endpoint wants it."""
    subscribed = [w for w in _endpoints(session, tenant_id) if type_ in w.events]
    if not subscribed:
        return None
    event, _ = _write(session, tenant_id, type_, data, subscribed)
    return event


def ping(session: Session, webhook: Webhook) -> WebhookDelivery:
    """A ``webhook.ping`` event for this one endpoint (to test a receiver): its delivery."""
    data = {"webhook": {"id": str(webhook.id), "url": webhook.url}}
    _, (delivery,) = _write(session, webhook.tenant_id, PING, data, [webhook])
    return delivery


def _write(
    session: Session,
    tenant_id: uuid.UUID,
    type_: str,
    data: dict[str, Any],
    webhooks: list[Webhook],
) -> tuple[WebhookEvent, list[WebhookDelivery]]:
    created_at = utcnow()
    event_id = new_event_id()
    body = {
        "id": event_id,
        "type": type_,
        "created_at": _iso(created_at),
        "tenant_id": str(tenant_id),
        "data": data,
    }
    event = WebhookEvent(
        id=event_id,
        tenant_id=tenant_id,
        type=type_,
        created_at=created_at,
        body=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
    )
    deliveries = WebhookRepository.from_session(session).add_event(event, webhooks)
    after_commit.deliver(session)
    return event, deliveries


def _endpoints(session: Session, tenant_id: uuid.UUID) -> list[Webhook]:
    """The tenant's live endpoints, read once per transaction (a deletion that completes in its
    202 emits twice: one more statement, not two) and without flushing the change's own writes
    early (they go in its one batched flush)."""
    cache: dict[uuid.UUID, list[Webhook]] = session.info.setdefault(ENDPOINTS, {})
    if tenant_id not in cache:
        with session.no_autoflush:
            cache[tenant_id] = WebhookRepository.from_session(session).of_tenant(tenant_id)
    return cache[tenant_id]


def deletion_data(request: DeletionRequest) -> dict[str, Any]:
    """``{"deletion": ...}``: what ``GET /deletions/{id}`` shows, less the ids it names
    (``unknown_ids``) and the free-text ``failure_reason``."""
    return {
        "deletion": {
            "id": str(request.id),
            "model_id": str(request.model_id),
            "status": request.status.value,
            "partial": request.partial,
            "counts": {
                "requested": request.n_requested,
                "deleted": request.n_deleted,
                "already_deleted": request.n_already_deleted,
                "unknown": request.n_unknown,
            },
            "serving_generation": request.serving_generation,
            "received_at": _iso(request.received_at),
            "deactivated_at": _iso(request.deactivated_at),
            "approximated_at": _iso(request.approximated_at),
            "retraining_at": _iso(request.retraining_at),
            "completed_at": _iso(request.completed_at),
            "failed_at": _iso(request.failed_at),
            "url": f"/deletions/{request.id}",
        }
    }


def model_data(model: Model) -> dict[str, Any]:
    return {
        "model": {
            "id": str(model.id),
            "name": model.name,
            "status": model.status.value,
            "task": model.task.value,
            "n_shards": model.n_shards,
            "n_slices": model.n_slices,
            "serving_generation": model.serving_generation,
            "compute_profile": model.compute_profile,
            "url": f"/models/{model.id}",
        }
    }


def audit_data(job: Job) -> dict[str, Any]:
    params = AuditParams.of(job)
    return {
        "exactness_audit": {
            "id": str(job.id),
            "model_id": str(job.model_id),
            "status": job.status.value,
            "result": params.result,
            "shards": params.shards,
            "layers_checked": params.layers_checked,
            "layers_skipped": params.layers_skipped,
            "mismatched": params.mismatched,
            "requested_at": _iso(job.created_at),
            "finished_at": _iso(job.finished_at),
            "url": f"/models/{job.model_id}/exactness-audits/{job.id}",
        }
    }
