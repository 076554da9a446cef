"""Periodic upkeep: payloads past their deadline are purged, live jobs silent past their lease
are sent again, parked retrains whose time has come are sent, webhook events past their
retention are deleted, models serving a generation not measured yet get a measurement of their
quality (``service.quality``), the audit chain verified in full longest ago is verified again
(one per round, each every ``UNLEARN_AUDIT_FULL_VERIFY_INTERVAL_S``), and artifacts nothing
live names any more (dead layers' weights, stale pass statistics) are deleted from the store
(``service.artifacts.collection``) and announced, so that every process drops them from memory;
now and then, files no row names at all (a job that crashed before recording them) are swept.

It runs in ``unlearn housekeeper`` processes (a role of its own: nothing else needs to be up)
and, unless ``UNLEARN_API_HOUSEKEEPING`` is off, in the API processes' relay threads, as the
embedded ``make run`` does. However many run it, one leads at a time
(:class:`~service.db.leader.LeaderLock`): the others skip their rounds until it stops."""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.approximation.service import purge_overdue
from service.artifacts.collection import collect, sweep
from service.audit.service import verify_due
from service.db.engine import unit_of_work
from service.db.leader import LeaderLock
from service.engine import artifact_store
from service.quality.service import schedule_due
from service.serving.notify import publish_collected
from service.settings import Settings
from service.training.recovery import resend_stalled
from service.training.scheduling import release_due
from service.webhooks.service import forget_old_events


def housekeep(
    factory: sessionmaker[Session], settings: Settings, *, sweeping: bool = False
) -> list[str]:
    """One round of upkeep; returns the artifacts it deleted from the store. ``sweeping``: also
    sweep the files no row names (it lists the whole store: not every round)."""
    with unit_of_work(factory) as session:
        purge_overdue(session)
        resend_stalled(session, settings.job_lease_s)
        release_due(session)
        forget_old_events(session, settings.webhook_retention_s)
        schedule_due(session)
    if settings.audit_full_verify_interval_s > 0:
        with unit_of_work(factory) as session:  # its own transaction: it may take seconds
            verify_due(session, settings.audit_full_verify_interval_s)
    transaction = functools.partial(unit_of_work, factory)
    store = artifact_store(settings)
    collected = collect(transaction, store)
    if sweeping:
        collected += sweep(transaction, store, grace_s=settings.artifact_sweep_grace_s)
    if collected and settings.pubsub_url:
        publish_collected(settings.pubsub_url, collected)
    return collected


def interval_s(settings: Settings) -> float:
    """How often to housekeep: often enough that a stalled job waits little past its lease, and
    that dead artifacts go within 30 s even while no worker finishes a job (workers collect
    after each job; a deletion that completes in its request wakes a round at once)."""
    return min(30.0, settings.job_lease_s / 4)


class Housekeeper:
    """Rounds of :func:`housekeep`, acted on only while this process leads."""

    LOCK = "housekeeper"

    def __init__(self, factory: sessionmaker[Session], settings: Settings) -> None:
        self._factory = factory
        self._settings = settings
        self._lock = LeaderLock(settings.database_url, self.LOCK)
        self.rounds = 0  # the rounds this process acted on (it led)
        self.checked_at: float | None = None  # monotonic time of the last round, led or not
        self.swept_at: float | None = None  # monotonic time of the last sweep

    def __call__(self) -> list[str]:
        leads = self._lock.held()
        self.checked_at = time.monotonic()
        if not leads:
            return []
        every_s = self._settings.artifact_sweep_grace_s / 4
        sweeping = self.swept_at is None or self.checked_at - self.swept_at >= every_s
        collected = housekeep(self._factory, self._settings, sweeping=sweeping)
        if sweeping:
            self.swept_at = self.checked_at
        self.rounds += 1
        return collected

    def close(self) -> None:
        """Give the lead up (another housekeeper takes it at its next round)."""
        self._lock.release()


def run_housekeeper(settings: Settings, stopped: threading.Event) -> None:
    """The `unlearn housekeeper` role until ``stopped``: relays the outbox (any number of
    relays may run), housekeeps while it leads, and delivers webhook events (with
    ``UNLEARN_WEBHOOK_DELIVERY``; dispatchers claim deliveries under a lease, so any number may
    run); answers `/healthz` on ``UNLEARN_HEALTH_PORT``. It needs the database and the broker,
    no API process."""
    from service.db import after_commit
    from service.db.engine import make_engine, make_session_factory
    from service.observability.health_server import HealthServer
    from service.producer import create_producer
    from service.relay import OutboxRelay, celery_publisher
    from service.webhooks.delivery import WebhookDispatcher

    engine = make_engine(
        settings.database_url, sqlite_busy_timeout_s=settings.sqlite_busy_timeout_s
    )
    factory = make_session_factory(engine)
    celery = create_producer(settings)
    housekeeper = Housekeeper(factory, settings)
    every_s = interval_s(settings)
    relay = OutboxRelay(
        factory,
        celery_publisher(celery),
        interval_s=settings.relay_interval_s,
        housekeeping=housekeeper,
        housekeeping_s=every_s,
    )

    def health() -> tuple[bool, dict[str, Any]]:
        checked = housekeeper.checked_at
        age = None if checked is None else time.monotonic() - checked
        healthy = age is not None and age < 3 * every_s + settings.relay_interval_s
        return healthy, {"rounds_led": housekeeper.rounds, "round_age_s": age}

    server = (
        HealthServer(settings.host, settings.health_port, health) if settings.health_port else None
    )
    dispatcher = WebhookDispatcher(factory, settings) if settings.webhook_delivery else None
    after_commit.install(factory, relay=relay, dispatcher=dispatcher)
    if server is not None:
        server.start()
    relay.start()
    if dispatcher is not None:
        dispatcher.start()
    try:
        stopped.wait()
    finally:
        if dispatcher is not None:
            dispatcher.stop()
        relay.stop()
        housekeeper.close()
        if server is not None:
            server.stop()
        celery.close()
        engine.dispose()
