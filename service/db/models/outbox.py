"""The transactional outbox: messages written with the change that justifies them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from service.db.models.base import Base, BigIntId, CreatedAt, Json, utcnow


class OutboxMessage(CreatedAt, Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    task: Mapped[str] = mapped_column(sa.String(200))  # Celery task name
    queue: Mapped[str] = mapped_column(sa.String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(Json)  # ids only, never personal data
    # service.queues.Priority (low 0, normal 5, high 9); the relay maps it to the broker's scale.
    priority: Mapped[int] = mapped_column(default=5)
    available_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(sa.Text)

    __table_args__ = (sa.Index("ix_outbox_sent_at_available_at", "sent_at", "available_at"),)
