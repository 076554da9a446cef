"""One leader among processes that may all run the same periodic work (housekeeping).

Every process that can housekeep (each ``unlearn housekeeper``, and the API processes that keep
it on) tries the lock before each round and acts only while it holds it, so two of them never
re-send the same stalled job or collect the same artifacts at once:

- PostgreSQL: a session-level advisory lock, taken with ``pg_try_advisory_lock`` on a connection
  of its own that the leader keeps open. The server releases it the moment that connection ends,
  so a leader that is SIGKILLed, or loses its network, hands over by itself (no lease to wait
  for). The lock belongs to the database: two databases on one server have a leader each.
- SQLite (the embedded default, one machine): an exclusive ``flock`` on a file beside the
  database, released by the kernel when the process dies.

A leader checks its connection at every round (:meth:`LeaderLock.held`): after a database
restart the lock is gone with the connection, and it must win it again like everyone else.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from pathlib import Path
from typing import IO

import sqlalchemy as sa

log = logging.getLogger(__name__)


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class LeaderLock:
    """Leadership of ``name`` on the database at ``url``; ``held()`` takes it when free."""

    def __init__(self, url: str, name: str) -> None:
        self.name = name
        self._url = sa.make_url(url)
        self._engine: sa.Engine | None = None
        self._conn: sa.Connection | None = None
        self._file: IO[bytes] | None = None

    def held(self) -> bool:
        """Whether this process leads now: keeps the lock it has, or tries to take it."""
        if self._url.get_backend_name() == "sqlite":
            return self._flock()
        return self._advisory()

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the flock
            self._file = None
        if self._conn is not None:
            with contextlib.suppress(sa.exc.DBAPIError):
                self._conn.close()  # ending the session drops its advisory locks
            self._conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _flock(self) -> bool:
        if self._file is not None:
            return True
        database = self._url.database or ""
        if database in ("", ":memory:"):
            return True  # a private in-memory database: nobody else can act on it
        path = Path(f"{database}.{self.name}.lock")
        handle = path.open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        os.set_inheritable(handle.fileno(), False)
        self._file = handle
        log.info("this process leads %s", self.name)
        return True

    def _advisory(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.exec_driver_sql("SELECT 1")
                return True
            except sa.exc.DBAPIError:  # the connection (and the lock with it) is gone
                log.warning("lost the %s lock with its connection", self.name)
                self.release()
        if self._engine is None:
            # No pool: the lock lives exactly as long as the one connection we keep.
            self._engine = sa.create_engine(self._url, poolclass=sa.NullPool)
        try:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except sa.exc.DBAPIError:
            log.warning("could not reach the database to take the %s lock", self.name)
            return False
        taken = conn.scalar(sa.select(sa.func.pg_try_advisory_lock(lock_key(self.name))))
        if not taken:
            conn.close()
            return False
        self._conn = conn
        log.info("this process leads %s", self.name)
        return True
