"""Worker presence: which workers are alive, and for which compute profiles."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa

from service.db.models import WorkerPresence
from service.db.models.base import utcnow
from service.db.repositories.base import Repository

#: A worker silent for this many heartbeats is taken for gone.
MISSED_HEARTBEATS = 3


class WorkerRepository(Repository):
    def announce(self, name: str, profile: str, queues: Sequence[str], heartbeat_s: float) -> None:
        """Record (or refresh) a live worker; ``name`` is its Celery node name. It counts as
        gone once :data:`MISSED_HEARTBEATS` heartbeats pass without another announcement."""
        now = utcnow()
        expires = now + timedelta(seconds=MISSED_HEARTBEATS * heartbeat_s)
        row = self.session.get(WorkerPresence, name)
        if row is None:
            row = WorkerPresence(name=name, started_at=now)
            self.session.add(row)
        row.compute_profile, row.queues = profile, list(queues)
        row.seen_at, row.expires_at = now, expires
        self.session.flush()

    def forget(self, name: str) -> None:
        """A worker that shuts down cleanly leaves at once."""
        self.session.execute(sa.delete(WorkerPresence).where(WorkerPresence.name == name))

    def live(self, *, now: datetime | None = None) -> list[WorkerPresence]:
        """Workers whose last heartbeat has not expired, by name."""
        query = sa.select(WorkerPresence).where(WorkerPresence.expires_at >= (now or utcnow()))
        return list(self.session.scalars(query.order_by(WorkerPresence.name)))

    def live_by_profile(self) -> Counter[str]:
        """How many live workers consume the queues of each compute profile."""
        return Counter(w.compute_profile for w in self.live())
