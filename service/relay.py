"""The outbox relay: hands committed outbox messages to the broker, and retries what failed.

A message is written in the transaction that justifies it (a deletion, a finished job), so a
job exists in the broker only if its cause committed, and a broker outage delays it without
losing it: the relay marks a message sent only after the broker took it, and backs off on
errors. Messages are claimed with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (SQLite serialises
writers), so several relays (the API's, each worker's) never send one twice.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.db.engine import unit_of_work
from service.db.models import OutboxMessage
from service.db.repositories import OutboxRepository
from service.queues import Priority, Queue, queue_kind

log = logging.getLogger(__name__)
Publisher = Callable[[OutboxMessage], None]
MAX_BACKOFF_S = 60.0


#: Redis serves the *lowest* number first (kombu's priority steps 0, 3, 6, 9); AMQP the highest.
REDIS_PRIORITY = {Priority.high: 0, Priority.normal: 3, Priority.low: 9}


def broker_priority(priority: int, broker_url: str) -> int:
    """A message's priority (``Priority``: the higher, the sooner) on the broker's own scale."""
    level = Priority(priority)
    if broker_url.startswith(("redis://", "rediss://")):
        return REDIS_PRIORITY[level]
    return int(level)


def message_priority(message: OutboxMessage) -> Priority:
    """Passes (the `deletions` queue) before everything; retrains as their job was queued."""
    if queue_kind(message.queue) is Queue.deletions:
        return Priority.high
    return Priority(message.priority)


def celery_publisher(app: Any) -> Publisher:
    """Publish through a Celery app; the task id is the outbox row, so a re-send is visible."""
    broker_url = str(app.conf.broker_url or "")

    def publish(message: OutboxMessage) -> None:
        app.send_task(
            message.task,
            kwargs=message.payload,
            queue=message.queue,
            priority=broker_priority(message_priority(message), broker_url),
            task_id=f"outbox-{message.id}-{message.attempts}",
            retry=False,
        )

    return publish


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(MAX_BACKOFF_S, 0.5 * 2**attempts))


def relay_once(factory: sessionmaker[Session], publish: Publisher, *, limit: int = 100) -> int:
    """Send the due messages; returns how many the broker took. Stops at the first failure
    (the broker is likely down) after scheduling that message's retry."""
    sent = 0
    with unit_of_work(factory) as session:
        outbox = OutboxRepository.from_session(session)
        for message in outbox.due(limit):
            try:
                publish(message)
            except Exception as error:  # the broker's client raises many types
                log.warning("outbox message %s not sent: %s", message.id, type(error).__name__)
                outbox.mark_failed(
                    message, f"{type(error).__name__}: {error}", retry_in=backoff(message.attempts)
                )
                break
            outbox.mark_sent(message)
            sent += 1
    return sent


class OutboxRelay:
    """A daemon thread that relays every ``interval_s``, or at once when woken; it also runs
    ``housekeeping`` (e.g. overdue payload purges) every ``housekeeping_s``, or in the next
    round when woken with ``housekeep``."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        publish: Publisher,
        *,
        interval_s: float = 1.0,
        housekeeping: Callable[[], object] | None = None,
        housekeeping_s: float = 30.0,
    ) -> None:
        self._factory = factory
        self._publish = publish
        self._interval_s = interval_s
        self._housekeeping = housekeeping
        self._housekeeping_s = housekeeping_s
        self._housekept_at = -math.inf
        self._wake = threading.Event()
        self._housekeep_now = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self.rounds = 0  # rounds finished (tests wait for the first one)

    def start(self) -> None:
        self._thread.start()

    def wake(self, *, housekeep: bool = False) -> None:
        """Relay now (called after a commit that wrote messages); with ``housekeep``, housekeep
        in that round too (e.g. a deletion completed: its artifacts go at once)."""
        if housekeep:
            self._housekeep_now.set()
        self._wake.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.clear()
            try:
                while relay_once(self._factory, self._publish) and not self._stopped.is_set():
                    pass
                now = time.monotonic()
                due = now - self._housekept_at >= self._housekeeping_s
                if self._housekeeping and (due or self._housekeep_now.is_set()):
                    self._housekeep_now.clear()
                    self._housekept_at = now
                    self._housekeeping()
            except Exception:  # the database may be restarting; try again next round
                log.exception("outbox relay round failed")
            self.rounds += 1
            self._wake.wait(self._interval_s)
