"""Which deliveries a claim takes (``WebhookRepository.due``), on SQLite and PostgreSQL: fair
across tenants (a cap on each tenant's in flight, the least busy tenant first) and one attempt
in flight per endpoint."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.models import DeliveryState, Tenant, Webhook, WebhookDelivery
from service.db.models.base import utcnow
from service.db.repositories import TenantRepository, WebhookRepository
from service.webhooks import events


def _endpoints(session: Session, tenant: Tenant, n: int) -> list[Webhook]:
    webhooks = WebhookRepository.from_session(session)
    return [
        webhooks.add(
            tenant.id,
            url=f"https://{tenant.name}.example/{i}",
            events=["deletion.completed"],
            description=None,
            secret="whsec_x",
        )
        for i in range(n)
    ]


def _emit(session: Session, tenant: Tenant) -> list[WebhookDelivery]:
    event = events.emit(session, tenant.id, "deletion.completed", {"deletion": {}})
    assert event is not None
    session.flush()
    query = sa.select(WebhookDelivery).where(WebhookDelivery.event_seq == event.seq)
    return list(session.scalars(query).unique())


def test_claims_rotate_between_tenants_and_cap_each_tenants_in_flight(
    session: Session, tenant: Tenant
) -> None:
    other = TenantRepository.from_session(session).create(f"{tenant.name}-other")
    webhooks = WebhookRepository.from_session(session)
    _endpoints(session, tenant, 10)
    _endpoints(session, other, 1)
    noisy = _emit(session, tenant)  # older: 10 due deliveries
    (quiet,) = _emit(session, other)  # younger: 1

    first = webhooks.due(3, per_tenant=4)
    assert quiet in first  # the second tenant's first before the first tenant's second
    assert len(first) == 3 and sum(d in noisy for d in first) == 2
    for delivery in first:
        webhooks.lease(delivery, timedelta(seconds=30))
    session.flush()

    # Two of the noisy tenant in flight: two more at most, however many slots are free.
    second = webhooks.due(8, per_tenant=4)
    assert len(second) == 2 and all(d in noisy for d in second)
    for delivery in second:
        webhooks.lease(delivery, timedelta(seconds=30))
    session.flush()
    assert webhooks.due(8, per_tenant=4) == []  # at its cap

    # A lease that ended no longer counts (its dispatcher died): room for one again.
    second[0].leased_until = utcnow() - timedelta(seconds=1)
    session.flush()
    (again,) = webhooks.due(8, per_tenant=4)  # three in flight: room for one
    assert again in noisy


def test_an_endpoint_has_one_attempt_in_flight_even_when_an_older_one_is_redelivered(
    session: Session, tenant: Tenant
) -> None:
    webhooks = WebhookRepository.from_session(session)
    _endpoints(session, tenant, 1)
    (older,) = _emit(session, tenant)
    older.state = DeliveryState.delivered
    (newer,) = _emit(session, tenant)
    (claimed,) = webhooks.due(8, per_tenant=4)
    assert claimed is newer
    webhooks.lease(newer, timedelta(seconds=30))
    older.state = DeliveryState.pending  # redelivered while the newer one is in flight
    older.next_attempt_at = utcnow()
    session.flush()
    assert webhooks.due(8, per_tenant=4) == []
