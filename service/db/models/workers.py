"""Workers that announce themselves: which compute profile and queues each one consumes.

A worker writes its row when it starts and refreshes it every heartbeat, moving ``expires_at``
a few heartbeats ahead; a row past its ``expires_at`` is a worker that is gone (readers need
not know any worker's heartbeat). Status and the dashboard read it to say
when a model's jobs wait for a profile no live worker serves.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from service.db.models.base import Base, Json, utcnow


class WorkerPresence(Base):
    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(sa.String(255), primary_key=True)  # Celery's node name
    compute_profile: Mapped[str] = mapped_column(sa.String(64), index=True)
    queues: Mapped[list[str]] = mapped_column(Json)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
