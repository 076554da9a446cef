"""Recovering jobs whose message or worker was lost.

A message can vanish with a broker that restarts without persistence, and a worker killed in
the middle of a job leaves it `running` with its message unacknowledged until the broker's long
visibility timeout. Every live job therefore carries a heartbeat (sent, started, each stage
done); a live job silent for longer than the lease is sent again through the outbox. A
duplicate delivery is harmless: a finished job ignores it, a running one restarts from its
recorded state, and activation serves only layers whose slice versions are current.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.orm import Session

from service.db.models.base import utcnow
from service.db.repositories import JobRepository
from service.training import scheduling

log = logging.getLogger(__name__)


def resend_stalled(session: Session, lease_s: float, *, limit: int = 100) -> int:
    """Send again every live job silent for longer than ``lease_s``; returns how many."""
    now = utcnow()
    stalled = JobRepository.from_session(session).stalled(
        now - timedelta(seconds=lease_s), limit=limit
    )
    for job in stalled:
        log.warning(
            "job %s (%s) silent since %s: sending it again",
            job.id,
            job.status.value,
            job.heartbeat_at,
        )
        job.heartbeat_at = now  # the next resend waits a whole lease
        scheduling.enqueue(session, job)
    return len(stalled)
