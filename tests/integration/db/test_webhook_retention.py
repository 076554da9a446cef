"""Webhook events are kept for ``UNLEARN_WEBHOOK_RETENTION_S``, then housekeeping deletes them
with their deliveries and attempts; an event still pending for some endpoint stays."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.models import DeliveryState, Tenant, WebhookAttempt, WebhookDelivery, WebhookEvent
from service.db.models.base import utcnow
from service.db.repositories import WebhookRepository
from service.webhooks import events
from service.webhooks.service import forget_old_events

DAY_S = 86400.0


def test_settled_events_past_the_retention_go_and_the_rest_stay(
    session: Session, tenant: Tenant
) -> None:
    webhooks = WebhookRepository.from_session(session)
    for url in ("https://a.example/hook", "https://b.example/hook"):
        webhooks.add(
            tenant.id, url=url, events=["deletion.completed"], description=None, secret="whsec_x"
        )
    emitted = [
        events.emit(session, tenant.id, "deletion.completed", {"deletion": {"n": i}})
        for i in range(4)
    ]
    session.flush()
    old = utcnow() - timedelta(days=40)
    states = [  # (created, the two endpoints' delivery states)
        (old, DeliveryState.delivered, DeliveryState.failed),  # settled and old: goes
        (old, DeliveryState.delivered, DeliveryState.pending),  # one still pending: stays
        (utcnow(), DeliveryState.delivered, DeliveryState.delivered),  # recent: stays
        (old, DeliveryState.failed, DeliveryState.failed),  # settled and old: goes
    ]
    for event, (created, *delivery_states) in zip(emitted, states, strict=True):
        assert event is not None
        event.created_at = created
        deliveries = session.scalars(
            sa.select(WebhookDelivery)
            .where(WebhookDelivery.event_seq == event.seq)
            .order_by(WebhookDelivery.webhook_id)
        ).all()
        for delivery, state in zip(deliveries, delivery_states, strict=True):
            delivery.state = state
            webhooks.record_attempt(
                delivery, at=created, status_code=200, error=None, duration_ms=1
            )
    session.flush()

    assert forget_old_events(session, 30 * DAY_S) == 2
    kept = set(session.scalars(sa.select(WebhookEvent.id)))
    assert kept == {emitted[1].id, emitted[2].id}  # type: ignore[union-attr]
    seqs = set(session.scalars(sa.select(WebhookEvent.seq)))
    assert set(session.scalars(sa.select(WebhookDelivery.event_seq))) == seqs
    assert session.scalar(sa.select(sa.func.count()).select_from(WebhookAttempt)) == 4
    assert forget_old_events(session, 30 * DAY_S) == 0
