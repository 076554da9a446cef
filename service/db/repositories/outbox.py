"""The transactional outbox: messages are written in the transaction that justifies them and
handed to the broker by a relay after commit; what the broker did not take is sent again."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from service.db import after_commit
from service.db.models import OutboxMessage
from service.db.models.base import utcnow
from service.db.repositories.base import Repository


class OutboxRepository(Repository):
    def add(
        self,
        task: str,
        queue: str,
        payload: dict[str, Any],
        *,
        priority: int = 5,
        delay: timedelta | None = None,
    ) -> OutboxMessage:
        """A message for the relay; ``delay`` holds it back (a retrain waits for more deletions
        to join it). Inserted at the next flush, in one batch with the transaction's others."""
        message = OutboxMessage(
            task=task,
            queue=queue,
            payload=payload,
            priority=priority,
            available_at=utcnow() + (delay or timedelta()),
        )
        self.session.add(message)
        after_commit.relay(self.session)
        return message

    def due(self, limit: int = 100, *, now: datetime | None = None) -> list[OutboxMessage]:
        """Unsent messages whose time has come, oldest first, locked against other relays."""
        query = (
            sa.select(OutboxMessage)
            .where(OutboxMessage.sent_at.is_(None), OutboxMessage.available_at <= (now or utcnow()))
            .order_by(OutboxMessage.id)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        return list(self.session.scalars(query))

    def mark_sent(self, message: OutboxMessage) -> None:
        message.sent_at = utcnow()
        message.attempts += 1

    def mark_failed(self, message: OutboxMessage, error: str, *, retry_in: timedelta) -> None:
        message.attempts += 1
        message.last_error = error[:2000]
        message.available_at = utcnow() + retry_in

    def pending_count(self) -> int:
        return (
            self.session.scalar(
                sa.select(sa.func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.sent_at.is_(None))
            )
            or 0
        )
