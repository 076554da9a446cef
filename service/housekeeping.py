"""Periodic upkeep run by every API process's relay thread: payloads past their deadline are
purged, live jobs silent past their lease are sent again, parked retrains whose time has come are
sent, and pass statistics no pass can use any more are deleted."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from service.approximation.service import purge_overdue
from service.db.engine import unit_of_work
from service.db.repositories import StatisticsRepository
from service.s3t import artifacts_dir
from service.settings import Settings
from service.training.recovery import resend_stalled
from service.training.scheduling import release_due
from unlearning.artifacts import LocalArtifactStore


def housekeep(factory: sessionmaker[Session], settings: Settings) -> None:
    with unit_of_work(factory) as session:
        purge_overdue(session)
        resend_stalled(session, settings.job_lease_s)
        release_due(session)
        unused = StatisticsRepository.from_session(session).collect()
    store = LocalArtifactStore(artifacts_dir(settings))
    for ref in unused:  # after the commit: a row never names a deleted artifact
        store.delete(ref)


def interval_s(settings: Settings) -> float:
    """How often to housekeep: often enough that a stalled job waits little past its lease."""
    return min(30.0, settings.job_lease_s / 4)
