"""A time limit on one whole webhook POST, its DNS lookup included.

httpx's timeout bounds each phase and each read from the socket, so a receiver that drips its
answer (a byte of the status line or of a header every few seconds) never trips it and could
hold a dispatcher slot for hours. The deadline starts before the DNS lookup, which gets what is
left of it (``remaining``), so a slow resolver cannot outlive the attempt (nor its lease)
either. :class:`Deadline` learns the connection's socket through httpcore's ``trace``
extension and shuts it down when the time is up; the blocked read then fails at once and the
attempt is recorded as timed out.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType
from typing import Any, Self

#: httpcore's trace events that carry a connection's network stream as their return value.
CONNECTED = ("connection.connect_tcp.complete", "connection.start_tls.complete")


class Deadline:
    """``with Deadline(seconds) as deadline:`` send the request with
    ``extensions={"trace": deadline.trace}``; ``expired`` says whether the time ran out."""

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._seconds = seconds
        self._started = time.monotonic()
        self.expired = False

    def remaining(self) -> float:
        """Seconds left (0 once the time is up): what a step before the connection (the DNS
        lookup) may still take."""
        return max(self._seconds - (time.monotonic() - self._started), 0.0)

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore calls this at each step of the request (in the sending thread)."""
        if event not in CONNECTED:
            return
        sock = info["return_value"].get_extra_info("socket")
        with self._lock:
            self._socket = sock
            expired = self.expired
        if expired:  # the time ran out while connecting
            _cut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sock = self._socket
        if sock is not None:
            _cut(sock)

    def __enter__(self) -> Self:
        self._started = time.monotonic()
        self._timer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._timer.cancel()


def _cut(sock: socket.socket) -> None:
    """Shut the connection down: a read blocked on it in another thread returns at once."""
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)
