"""Webhooks: endpoints, events and their deliveries, claimed by dispatchers with a lease.

A delivery is due when it is `pending`, its time has come, no live lease holds it, and it is
the oldest pending delivery of its endpoint (deliveries to one endpoint go in the order their
events occurred; a `failed` one no longer blocks). Claims are fair across tenants (``due``: a
cap on each tenant's POSTs in flight, the least busy tenant first), take one advisory lock on
PostgreSQL so their in-flight counts are exact, and lock their rows with ``FOR UPDATE SKIP
LOCKED`` (SQLite serialises writers), so two dispatchers never claim one delivery.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from service.db.models import (
    DeliveryState,
    Tenant,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
)
from service.db.models.base import utcnow
from service.db.repositories.base import Repository
from service.errors import NotFoundError

#: The advisory lock a claim takes on PostgreSQL (a fixed 64-bit key: "webhook claims").
CLAIM_LOCK = 0x776831636C61696D
#: Why a pending delivery stopped without a 2xx when its endpoint went.
CANCELLED = "cancelled: the webhook was deleted"


class WebhookNotFoundError(NotFoundError):
    title = "Webhook not found"
    slug = "webhook-not-found"


class DeliveryNotFoundError(NotFoundError):
    title = "Webhook delivery not found"
    slug = "webhook-delivery-not-found"


class WebhookRepository(Repository):
    # Endpoints

    def add(
        self,
        tenant_id: uuid.UUID,
        *,
        url: str,
        events: list[str],
        description: str | None,
        secret: str,
    ) -> Webhook:
        webhook = Webhook(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            url=url,
            events=events,
            description=description,
            secret=secret,
            created_at=utcnow(),
        )
        self.session.add(webhook)
        self.session.flush()
        return webhook

    def get(self, webhook_id: uuid.UUID, *, tenant_id: uuid.UUID) -> Webhook:
        """The tenant's live endpoint (another tenant's, or a deleted one, is not found)."""
        webhook = self.session.get(Webhook, webhook_id)
        if webhook is None or webhook.tenant_id != tenant_id or webhook.deleted_at is not None:
            raise WebhookNotFoundError(f"no webhook {webhook_id}")
        return webhook

    def of_tenant(self, tenant_id: uuid.UUID) -> list[Webhook]:
        """The tenant's live endpoints, oldest first."""
        return list(
            self.session.scalars(
                sa.select(Webhook)
                .where(Webhook.tenant_id == tenant_id, Webhook.deleted_at.is_(None))
                .order_by(Webhook.created_at, Webhook.id)
            )
        )

    def live_count(self, tenant_id: uuid.UUID) -> int:
        """How many live endpoints the tenant has, its row locked first on PostgreSQL so that
        two registrations at once cannot both pass the cap (SQLite serialises writers)."""
        if self.dialect == "postgresql":
            self.session.execute(
                sa.select(Tenant.id).where(Tenant.id == tenant_id).with_for_update()
            )
        return int(
            self.session.scalar(
                sa.select(sa.func.count())
                .select_from(Webhook)
                .where(Webhook.tenant_id == tenant_id, Webhook.deleted_at.is_(None))
            )
            or 0
        )

    def delete(self, webhook: Webhook) -> int:
        """Mark the endpoint deleted and cancel its pending deliveries; returns how many."""
        now = utcnow()
        webhook.deleted_at = now
        result = self.session.execute(
            sa.update(WebhookDelivery)
            .where(
                WebhookDelivery.webhook_id == webhook.id,
                WebhookDelivery.state == DeliveryState.pending,
            )
            .values(state=DeliveryState.failed, last_error=CANCELLED, leased_until=None)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    # Events

    def add_event(
        self,
        event: WebhookEvent,
        webhooks: Sequence[Webhook],
    ) -> list[WebhookDelivery]:
        """The event and one pending delivery per endpoint, inserted at the next flush."""
        self.session.add(event)
        now = utcnow()
        deliveries = [
            WebhookDelivery(
                id=uuid.uuid4(),
                webhook_id=webhook.id,
                event=event,
                state=DeliveryState.pending,
                attempt_count=0,
                next_attempt_at=now,
                created_at=now,
            )
            for webhook in webhooks
        ]
        self.session.add_all(deliveries)
        return deliveries

    # Deliveries

    def due(
        self, limit: int, *, per_tenant: int, now: datetime | None = None
    ) -> list[WebhookDelivery]:
        """Up to ``limit`` due deliveries (see the module), fairly across tenants, locked
        against other dispatchers.

        A tenant never has more than ``per_tenant`` in flight (leased, over all dispatchers):
        each candidate gets the rank ``in flight + its place among the tenant's due ones``, and
        the lowest ranks go first (the oldest event among equals). So one claim takes the
        oldest due delivery of each tenant before the second of any, and the slot that frees
        next goes to the tenant with the fewest POSTs in flight, not to the one with the oldest
        backlog. An endpoint has at most one attempt in flight: its oldest pending delivery
        only, and none while another of its deliveries is leased (a redelivered older one)."""
        now = now or utcnow()
        leased = sa.and_(
            WebhookDelivery.state == DeliveryState.pending,
            WebhookDelivery.leased_until.is_not(None),
            WebhookDelivery.leased_until > now,
        )
        in_flight = (
            sa.select(Webhook.tenant_id, sa.func.count().label("n"))
            .select_from(WebhookDelivery)
            .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .where(leased)
            .group_by(Webhook.tenant_id)
            .subquery()
        )
        older = aliased(WebhookDelivery)
        place = sa.func.row_number().over(
            partition_by=Webhook.tenant_id, order_by=WebhookDelivery.event_seq
        )
        candidates = (
            sa.select(
                WebhookDelivery.id.label("id"),
                WebhookDelivery.event_seq.label("event_seq"),
                (sa.func.coalesce(in_flight.c.n, 0) + place).label("rank"),
            )
            .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .outerjoin(in_flight, in_flight.c.tenant_id == Webhook.tenant_id)
            .where(self._due(now), ~sa.exists().where(*self._busy(older, now)))
            .subquery()
        )
        ranked = self.session.execute(
            sa.select(candidates.c.id)
            .where(candidates.c.rank <= per_tenant)
            .order_by(candidates.c.rank, candidates.c.event_seq)
            .limit(limit)
        ).all()
        ids = [row.id for row in ranked]
        if not ids:
            return []
        # Lock them, checking again (another dispatcher may have claimed one meanwhile).
        query = sa.select(WebhookDelivery).where(WebhookDelivery.id.in_(ids), self._due(now))
        if self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True, of=WebhookDelivery)
        order = {delivery_id: i for i, delivery_id in enumerate(ids)}
        return sorted(self.session.scalars(query).unique(), key=lambda d: order[d.id])

    @staticmethod
    def _due(now: datetime) -> sa.ColumnElement[bool]:
        """Pending, its time come, no live lease, the oldest pending one of its endpoint."""
        older = aliased(WebhookDelivery)
        return sa.and_(
            WebhookDelivery.state == DeliveryState.pending,
            WebhookDelivery.next_attempt_at <= now,
            sa.or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until <= now),
            ~sa.exists().where(
                older.webhook_id == WebhookDelivery.webhook_id,
                older.state == DeliveryState.pending,
                older.event_seq < WebhookDelivery.event_seq,
            ),
        )

    @staticmethod
    def _busy(other: type[WebhookDelivery], now: datetime) -> tuple[sa.ColumnElement[bool], ...]:
        """``other`` is a delivery of the same endpoint in flight (leased)."""
        return (
            other.webhook_id == WebhookDelivery.webhook_id,
            other.state == DeliveryState.pending,
            other.leased_until.is_not(None),
            other.leased_until > now,
        )

    def lock_claims(self) -> None:
        """Serialise claims across dispatchers for this transaction (PostgreSQL: an advisory
        lock; SQLite's writers are serialised already), so the in-flight counts a claim reads
        are those the claim before it left and the per-tenant cap holds exactly."""
        if self.dialect == "postgresql":
            self.session.execute(sa.select(sa.func.pg_advisory_xact_lock(CLAIM_LOCK)))

    def lease(self, delivery: WebhookDelivery, lease: timedelta) -> uuid.UUID:
        """Claim the delivery for ``lease``; the returned id proves the claim when recording."""
        delivery.lease_id = uuid.uuid4()
        delivery.leased_until = utcnow() + lease
        return delivery.lease_id

    def get_for_update(self, delivery_id: uuid.UUID) -> WebhookDelivery | None:
        query = sa.select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
        if self.dialect == "postgresql":
            query = query.with_for_update(of=WebhookDelivery)
        return self.session.scalars(query).unique().one_or_none()

    def webhook(self, webhook_id: uuid.UUID) -> Webhook:
        return self.session.get_one(Webhook, webhook_id)

    def record_attempt(
        self,
        delivery: WebhookDelivery,
        *,
        at: datetime,
        status_code: int | None,
        error: str | None,
        duration_ms: int,
    ) -> None:
        self.session.add(
            WebhookAttempt(
                delivery_id=delivery.id,
                at=at,
                status_code=status_code,
                error=error[:2000] if error else None,
                duration_ms=duration_ms,
            )
        )
        delivery.attempt_count += 1
        delivery.last_status_code = status_code
        delivery.last_error = error[:2000] if error else None
        delivery.leased_until = None
        delivery.lease_id = None

    def delivery(self, delivery_id: uuid.UUID, *, tenant_id: uuid.UUID) -> WebhookDelivery:
        """The tenant's delivery (through its endpoint, even a deleted one)."""
        delivery = self.session.get(WebhookDelivery, delivery_id)
        if delivery is None or self.webhook(delivery.webhook_id).tenant_id != tenant_id:
            raise DeliveryNotFoundError(f"no webhook delivery {delivery_id}")
        return delivery

    def deliveries_of(self, webhook_id: uuid.UUID, *, limit: int) -> list[WebhookDelivery]:
        """An endpoint's deliveries, newest event first."""
        return list(
            self.session.scalars(
                sa.select(WebhookDelivery)
                .where(WebhookDelivery.webhook_id == webhook_id)
                .order_by(WebhookDelivery.event_seq.desc())
                .limit(limit)
            ).unique()
        )

    def recent_of_tenant(self, tenant_id: uuid.UUID, *, limit: int) -> list[WebhookDelivery]:
        """The tenant's latest deliveries over all its endpoints, newest event first."""
        return list(
            self.session.scalars(
                sa.select(WebhookDelivery)
                .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                .where(Webhook.tenant_id == tenant_id)
                .order_by(WebhookDelivery.event_seq.desc())
                .limit(limit)
            ).unique()
        )

    def attempts(self, delivery_id: uuid.UUID) -> list[WebhookAttempt]:
        return list(
            self.session.scalars(
                sa.select(WebhookAttempt)
                .where(WebhookAttempt.delivery_id == delivery_id)
                .order_by(WebhookAttempt.id)
            )
        )

    def forget_before(self, cutoff: datetime, *, limit: int = 1000) -> int:
        """Delete up to ``limit`` events older than ``cutoff`` none of whose deliveries is still
        pending, with their deliveries and attempts; returns how many events went."""
        pending = sa.exists().where(
            WebhookDelivery.event_seq == WebhookEvent.seq,
            WebhookDelivery.state == DeliveryState.pending,
        )
        seqs = list(
            self.session.scalars(
                sa.select(WebhookEvent.seq)
                .where(WebhookEvent.created_at < cutoff, ~pending)
                .order_by(WebhookEvent.seq)
                .limit(limit)
            )
        )
        if not seqs:
            return 0
        deliveries = sa.select(WebhookDelivery.id).where(WebhookDelivery.event_seq.in_(seqs))
        self.session.execute(
            sa.delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(deliveries))
        )
        self.session.execute(sa.delete(WebhookDelivery).where(WebhookDelivery.event_seq.in_(seqs)))
        self.session.execute(sa.delete(WebhookEvent).where(WebhookEvent.seq.in_(seqs)))
        return len(seqs)
