"""A real S3 server for tests: moto's standalone server (``moto[server]``) as a child process on
loopback, so that the store talks HTTP to another process as it would to MinIO or AWS.

    with S3Server() as s3:
        bucket = s3.create_bucket()
        env = s3.env(bucket)            # what an `unlearn` process needs to use it
        store = s3.store(bucket)        # an S3ArtifactStore on it (AWS_* set: credentials())

Credentials are moto's dummies (``testing``); the server keeps everything in memory and loses it
when it stops.
"""

from __future__ import annotations

import collections
import http.client
import http.server
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from tests.integration.services import free_port
from unlearning.object_store import S3ArtifactStore

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


class S3Server:
    """moto's server on a free loopback port; :meth:`start` returns once it answers."""

    def __init__(self, host: str = "127.0.0.1", start_timeout_s: float = 30.0) -> None:
        self.host = host
        self.start_timeout_s = start_timeout_s
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        assert self.port, "the server is not started"
        return f"http://{self.host}:{self.port}"

    def start(self) -> S3Server:
        # The port is free when chosen, not necessarily when moto binds it: try a few.
        for _ in range(3):
            self.port = free_port()
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                env={**os.environ, **CREDENTIALS, "AWS_DEFAULT_REGION": REGION},
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            if self._wait_until_answering():
                return self
            output = self.stop()
        raise RuntimeError(f"moto's S3 server did not start (moto[server] installed?):\n{output}")

    def _wait_until_answering(self) -> bool:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                return False  # exited: the port was taken meanwhile, or moto is missing
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1):
                    return True
            except urllib.error.HTTPError:
                return True  # an HTTP answer of any status: it is serving
            except OSError:
                time.sleep(0.1)
        return False

    def stop(self) -> str:
        """Stop the server; its output (empty when it was not started)."""
        process, log = self._process, self._log
        self._process = self._log = None
        if process is None or log is None:
            return ""
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.seek(0)
        output = log.read().decode(errors="replace")
        log.close()
        return output

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def client(self, endpoint_url: str | None = None, max_attempts: int = 1) -> S3Client:
        """A boto3 client with the test credentials (on the server, or on ``endpoint_url``)."""
        client: S3Client = boto3.session.Session(
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=REGION,
        ).client(
            "s3",
            endpoint_url=endpoint_url or self.endpoint_url,
            config=Config(
                retries={"mode": "standard", "total_max_attempts": max_attempts},
                s3={"addressing_style": "path"},
            ),
        )
        return client

    def create_bucket(self, name: str | None = None) -> str:
        """A new empty bucket (a unique name unless given); returns its name."""
        name = name or f"artifacts-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        """Every object key in the bucket."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def url(self, bucket: str, prefix: str = "") -> str:
        return f"s3://{bucket}/{prefix}".rstrip("/")

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """The variables an `unlearn` process needs to keep its artifacts in ``bucket``."""
        return {
            "UNLEARN_ARTIFACTS_URL": self.url(bucket, prefix),
            "UNLEARN_S3_ENDPOINT_URL": self.endpoint_url,
            "UNLEARN_S3_REGION": REGION,
            **self.credentials(),
        }

    def store(
        self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, **options: Any
    ) -> S3ArtifactStore:
        """A store on the bucket built as the service builds one (its own client, retries and
        timeouts; credentials from the environment, see :meth:`credentials`), through
        ``endpoint_url`` if given (a proxy in front of the server)."""
        return S3ArtifactStore(
            bucket,
            prefix,
            endpoint_url=endpoint_url or self.endpoint_url,
            region=REGION,
            **options,
        )

    @staticmethod
    def credentials() -> dict[str, str]:
        """The AWS variables boto3's chain reads: set them where a store is built."""
        return {**CREDENTIALS, "AWS_DEFAULT_REGION": REGION}


class FaultyProxy:
    """A loopback HTTP proxy in front of an S3 server: it answers ``status`` (a 5xx) to the first
    ``times`` requests of a method whose path ends with a suffix (:meth:`fail`), or cuts their
    answers' bodies short (:meth:`cut`), forwards every other request, and counts every request
    that reached it by (method, path): the evidence that a client really retried."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self._faults: list[list[Any]] = []  # [method, suffix, times left, status; 0: cut]
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail(self, method: str, path_suffix: str, times: int = 1, status: int = 503) -> None:
        with self._lock:
            self._faults.append([method, path_suffix, times, status])

    def cut(self, method: str, path_suffix: str, times: int = 1) -> None:
        """Forward, but send only half of the answer's body, then close the connection."""
        self.fail(method, path_suffix, times, status=0)

    def count(self, method: str, path_suffix: str) -> int:
        with self._lock:
            return sum(
                n for (m, p), n in self.requests.items() if m == method and p.endswith(path_suffix)
            )

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _fault(self, method: str, path: str) -> int | None:
        with self._lock:
            self.requests[(method, path)] += 1
            for fault in self._faults:
                if fault[0] == method and path.endswith(fault[1]) and fault[2] > 0:
                    fault[2] -= 1
                    return int(fault[3])
        return None

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive and `Expect: 100-continue`, as S3

            def _relay(self) -> None:
                body = self._body()
                path = urllib.parse.urlsplit(self.path).path
                status = proxy._fault(self.command, path)
                if status:
                    self._answer(status, {"Content-Type": "application/xml"}, _error_xml(status))
                    return
                upstream = http.client.HTTPConnection(
                    proxy.upstream.hostname or "127.0.0.1", proxy.upstream.port, timeout=30
                )
                try:
                    headers = {
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() not in ("transfer-encoding", "expect", "content-length")
                    }
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    kept = {
                        k: v
                        for k, v in answer.getheaders()
                        if k.lower() not in ("transfer-encoding", "connection", "content-length")
                    }
                    if self.command == "HEAD":
                        kept["Content-Length"] = answer.getheader("Content-Length", "0")
                    if status == 0:  # the full length announced, half the bytes sent
                        kept["Content-Length"] = str(len(data))
                        data = data[: len(data) // 2]
                        self.close_connection = True
                    self._answer(answer.status, kept, data)
                finally:
                    upstream.close()

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _relay  # noqa: N815 - http.server's names

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        return Handler


def _error_xml(status: int) -> bytes:
    code = {500: "InternalError", 503: "ServiceUnavailable"}.get(status, "InternalError")
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>injected by the test proxy</Message></Error>"
    ).encode()
