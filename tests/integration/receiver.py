"""A webhook receiver in a process of its own, on loopback, for tests.

Run as ``python -m tests.integration.receiver --port P --log FILE --script 500,500,200``: every
POST is appended to ``FILE`` as one JSON line (arrival time, path, headers, body as text) the
moment it arrives, then answered with the next step of the script; after the script, every
request gets ``--then`` (default 200). A step is a status code, ``sleep:<seconds>:<status>``
(answer after a delay), ``hang`` (hold the request open for an hour) or ``drip`` (send the
status line, then a header a byte at a time, one every ``DRIP_S``, for an hour: each read
returns well within any timeout, the answer never ends).

:class:`Receiver` starts one and reads what it received::

    with Receiver(tmp_path, script=["500", "500", "200"]) as receiver:
        ...  # register receiver.url
        requests = receiver.wait_for(3)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

HANG_S = 3600.0
DRIP_S = 0.1


class _Script:
    def __init__(self, steps: list[str], then: str) -> None:
        self.steps = list(steps)
        self.then = then
        self.lock = threading.Lock()

    def next(self) -> str:
        with self.lock:
            return self.steps.pop(0) if self.steps else self.then


def _serve(port: int, log: Path, script: _Script) -> None:
    write = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            step = script.next()
            record = {
                "at": time.time(),
                "path": self.path,
                "headers": dict(self.headers.items()),
                "body": body.decode("utf-8", "replace"),
                "step": step,
            }
            with write, log.open("a") as file:
                file.write(json.dumps(record) + "\n")
            if step == "hang":
                time.sleep(HANG_S)
                status = 200
            elif step == "drip":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
                for _ in range(int(HANG_S / DRIP_S)):
                    time.sleep(DRIP_S)
                    self.wfile.write(b"x")
                return
            elif step.startswith("sleep:"):
                _, seconds, code = step.split(":")
                time.sleep(float(seconds))
                status = int(code)
            else:
                status = int(step)
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


class Receiver:
    """The receiver process; ``url`` to register, ``requests()`` what arrived so far."""

    def __init__(self, folder: Path, *, script: list[str] | None = None, then: str = "200") -> None:
        from tests.integration.services import free_port

        self.port = free_port()
        self.log = folder / f"receiver-{self.port}.jsonl"
        self.log.touch()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.receiver",
                "--port",
                str(self.port),
                "--log",
                str(self.log),
                "--script",
                ",".join(script or []),
                "--then",
                then,
            ],
            cwd=Path(__file__).resolve().parents[2],
        )
        self._wait_listening()

    def _wait_listening(self) -> None:
        import socket

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the receiver did not start listening")

    def requests(self) -> list[dict[str, Any]]:
        lines = self.log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def wait_for(self, n: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """At least ``n`` requests (all that arrived), or AssertionError after the timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            received = self.requests()
            if len(received) >= n:
                return received
            time.sleep(0.05)
        raise AssertionError(f"{len(self.requests())} requests arrived, not {n}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--script", default="")
    parser.add_argument("--then", default="200")
    args = parser.parse_args()
    steps = [s for s in args.script.split(",") if s]
    _serve(args.port, args.log, _Script(steps, args.then))


if __name__ == "__main__":
    main()
