"""Helpers for tests that run real processes against the machine's services."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TypeVar

import httpx

from tests.conftest import require_service

T = TypeVar("T")


def _redis_url() -> str:
    """The tests' Redis database: 15 by default, one lower for each further xdist worker (each
    flushes its own; the serving channel is per database too)."""
    url = os.environ.get("UNLEARN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    offset = int(worker.removeprefix("gw") or 0)
    if not offset:
        return url
    base, _, db = url.rpartition("/")
    return f"{base}/{int(db or 0) - offset}"


REDIS_URL = _redis_url()


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


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the ``unlearn`` CLI of this interpreter to its end (``env`` only, and a bare PATH)."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 now (a process still starting does not)."""
    import httpx

    try:
        return httpx.get(url).status_code == 200
    except httpx.TransportError:
        return False


def wait_for(predicate: Callable[[], T | None], timeout_s: float, what: str) -> T:
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


# The machine's own start commands (see the env notes); a test that stops a service starts it.
REDIS_START = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
    "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
)
POSTGRES_RESTART = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main restart"


def restart_redis() -> None:
    """Restart the machine's Redis: everything it held is gone (it keeps nothing on disk)."""
    import redis

    subprocess.run(["redis-cli", "-p", "6379", "shutdown", "nosave"], check=False)
    wait_for(lambda: not _redis_up(), 30, "Redis to stop")
    subprocess.run(REDIS_START, shell=True, check=True)
    wait_for(_redis_up, 30, "Redis to start")
    redis.Redis.from_url(REDIS_URL).flushdb()


def _redis_up() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def restart_postgres() -> None:
    """Restart the machine's PostgreSQL cluster and wait until it accepts connections."""
    subprocess.run(POSTGRES_RESTART, shell=True, check=True, timeout=120)
    wait_for(
        lambda: (
            subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], check=False).returncode == 0
        ),
        60,
        "PostgreSQL to accept connections",
    )


@contextlib.contextmanager
def api_processes(
    data_dir: Path, database_url: str, backbone: Path, base_model: str, token: str, count: int = 2
) -> Iterator[list[httpx.Client]]:
    """``count`` `unlearn serve` processes on one database and data folder, each with a client
    holding ``token``, once they answer; on exit they are stopped, and none may have printed a
    traceback."""
    env = {
        "UNLEARN_DATA_DIR": str(data_dir),
        "UNLEARN_DATABASE_URL": database_url,
        "UNLEARN_BACKBONE_PATH": str(backbone),
        "UNLEARN_DEFAULT_BASE_MODEL": base_model,
    }
    ports = [free_port() for _ in range(count)]
    processes = [unlearn(["serve", "--port", str(port)], env) for port in ports]
    clients = [
        httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        for port in ports
    ]
    try:
        for port in ports:
            wait_for(
                functools.partial(answers, f"http://127.0.0.1:{port}/healthz"),
                90,
                "an API process to answer /healthz",
            )
        yield clients
    finally:
        for client in clients:
            client.close()
        outputs = [stop(process) for process in processes]
    assert not any("Traceback" in output for output in outputs), outputs
