"""A worker announces itself in the lineage database: its node name, compute profile and queues.

A daemon thread of the worker's main process writes the row when the worker is ready and every
``UNLEARN_WORKER_HEARTBEAT_S`` after, also while a task runs (a solo pool runs tasks on the main
thread), and removes it on a clean shutdown. Status and the dashboard read these rows to tell a
job that waits for a worker of its model's profile from one that is merely queued.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from sqlalchemy.orm import Session, sessionmaker

from service.db.engine import unit_of_work
from service.db.repositories import WorkerRepository
from service.db.repositories.workers import MISSED_HEARTBEATS

log = logging.getLogger(__name__)


class Presence:
    def __init__(
        self,
        factory: sessionmaker[Session],
        name: str,
        profile: str,
        queues: Sequence[str],
        *,
        interval_s: float,
    ) -> None:
        self._factory = factory
        self.name, self.profile, self.queues = name, profile, list(queues)
        self._interval_s = interval_s
        self.beat_at: float | None = None  # monotonic time of the last beat that was written
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-presence", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def beat(self) -> None:
        with unit_of_work(self._factory) as session:
            WorkerRepository.from_session(session).announce(
                self.name, self.profile, self.queues, self._interval_s
            )
        self.beat_at = time.monotonic()

    def health(self) -> tuple[bool, dict[str, object]]:
        """Healthy while the heartbeat reaches the database: the last one is younger than the
        service's own limit for a gone worker (``MISSED_HEARTBEATS``), even while a job runs."""
        age = None if self.beat_at is None else time.monotonic() - self.beat_at
        healthy = age is not None and age < MISSED_HEARTBEATS * self._interval_s
        return healthy, {"worker": self.name, "profile": self.profile, "heartbeat_age_s": age}

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(5)
        try:
            with unit_of_work(self._factory) as session:
                WorkerRepository.from_session(session).forget(self.name)
        except Exception:  # the database may be gone already; the row then just ages out
            log.warning("worker %s could not remove its presence row", self.name)

    def _run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            try:
                self.beat()
            except Exception:  # the database may be restarting; try again next beat
                log.exception("worker heartbeat failed")
