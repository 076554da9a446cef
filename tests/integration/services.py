"""Helpers for tests that run real processes against the machine's services."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

from tests.conftest import require_service

T = TypeVar("T")
REDIS_URL = os.environ.get("UNLEARN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def require_redis() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        require_service("Redis", str(exc), explicit="UNLEARN_TEST_REDIS_URL" in os.environ)
    return REDIS_URL


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _without_unlearn_vars() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("UNLEARN_")}


def unlearn(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """Start the ``unlearn`` CLI of this interpreter as a child process in its own process
    group; its output goes to a file (a pipe nobody reads would fill up and block it)."""
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by stop()
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", *args],
        env={**_without_unlearn_vars(), **env},
        text=True,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[2],
        start_new_session=True,
    )
    _logs[process.pid] = log
    return process


_logs: dict[int, IO[str]] = {}


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str) -> T:
    """Poll until ``predicate`` returns something truthy, and return it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def stop(process: subprocess.Popen[str]) -> str:
    """Stop the process (and any child it left behind); return its output."""
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    log = _logs.pop(process.pid)
    log.seek(0)
    out = log.read()
    log.close()
    return out
