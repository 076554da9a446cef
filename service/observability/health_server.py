"""`GET /healthz` for the processes that have no API: workers and housekeepers.

A daemon thread serves it, so it answers while the process's main thread is busy (a `--pool
solo` worker trains on its main thread and cannot answer a Celery ping until the job ends). The
answer comes from ``check``: 200 and its JSON when it says the process is healthy, 503 when not
(e.g. the worker's heartbeat has not reached the database for three intervals).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)
#: ``check()`` returns (healthy, details for the JSON body).
HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]


class HealthServer:
    def __init__(self, host: str, port: int, check: HealthCheck) -> None:
        handler = type("Handler", (_Handler,), {"check": staticmethod(check)})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("health checks on :%d/healthz", self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    check: HealthCheck

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/healthz":
            self._answer(404, {"status": "not found"})
            return
        try:
            healthy, details = self.check()
        except Exception as error:  # a broken check is an unhealthy process, not a crash
            healthy, details = False, {"error": type(error).__name__}
        self._answer(200 if healthy else 503, {"status": "ok" if healthy else "failing", **details})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Health probes every few seconds are not worth a log line each."""
