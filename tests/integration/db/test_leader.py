"""One housekeeper leads at a time, on SQLite and PostgreSQL, and a dead leader hands over."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from service.db.leader import LeaderLock
from service.settings import Settings
from tests.integration.services import wait_for


def test_one_holder_at_a_time(settings: Settings) -> None:
    first = LeaderLock(settings.database_url, "test")
    second = LeaderLock(settings.database_url, "test")
    other = LeaderLock(settings.database_url, "another")
    try:
        assert first.held()
        assert first.held()  # it keeps what it has
        assert not second.held()
        assert other.held()  # locks of other names are apart
        first.release()
        assert second.held()
        assert not first.held()
    finally:
        for lock in (first, second, other):
            lock.release()


def test_a_killed_leader_hands_over(settings: Settings) -> None:
    """The lock dies with its process (its connection or its file): no lease to wait out."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import sys, time
                from service.db.leader import LeaderLock
                lock = LeaderLock({settings.database_url!r}, "test")
                assert lock.held()
                print("held", flush=True)
                time.sleep(600)
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    lock = LeaderLock(settings.database_url, "test")
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        assert not lock.held()
        holder.kill()
        holder.wait()
        wait_for(lock.held, 10, "the lock to pass on")
    finally:
        holder.kill()
        lock.release()
