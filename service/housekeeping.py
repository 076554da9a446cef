"""Periodic upkeep run by every API process's relay thread: payloads past their deadline are
purged, live jobs silent past their lease are sent again, and parked retrains whose time has
come are sent."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from service.approximation.service import purge_overdue
from service.db.engine import unit_of_work
from service.settings import Settings
from service.training.recovery import resend_stalled
from service.training.scheduling import release_due


def housekeep(factory: sessionmaker[Session], settings: Settings) -> None:
    with unit_of_work(factory) as session:
        purge_overdue(session)
        resend_stalled(session, settings.job_lease_s)
        release_due(session)


def interval_s(settings: Settings) -> float:
    """How often to housekeep: often enough that a stalled job waits little past its lease."""
    return min(30.0, settings.job_lease_s / 4)
