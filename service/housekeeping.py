"""Periodic upkeep run by every API process's relay thread: payloads past their deadline are
purged, live jobs silent past their lease are sent again, parked retrains whose time has come are
sent, and artifacts nothing live names any more (dead layers' weights, stale pass statistics)
are deleted from the store (``service.artifacts.collection``) and announced, so that every
process drops them from memory."""

from __future__ import annotations

import functools

from sqlalchemy.orm import Session, sessionmaker

from service.approximation.service import purge_overdue
from service.artifacts.collection import collect
from service.db.engine import unit_of_work
from service.engine import artifact_store
from service.serving.notify import publish_collected
from service.settings import Settings
from service.training.recovery import resend_stalled
from service.training.scheduling import release_due


def housekeep(factory: sessionmaker[Session], settings: Settings) -> list[str]:
    """One round of upkeep; returns the artifacts it deleted from the store."""
    with unit_of_work(factory) as session:
        purge_overdue(session)
        resend_stalled(session, settings.job_lease_s)
        release_due(session)
    collected = collect(functools.partial(unit_of_work, factory), artifact_store(settings))
    if collected and settings.pubsub_url:
        publish_collected(settings.pubsub_url, collected)
    return collected


def interval_s(settings: Settings) -> float:
    """How often to housekeep: often enough that a stalled job waits little past its lease, and
    that dead artifacts go within 30 s even while no worker finishes a job (workers collect
    after each job; a deletion that completes in its request wakes a round at once)."""
    return min(30.0, settings.job_lease_s / 4)
