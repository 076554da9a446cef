"""A cap on request bodies: anything larger is refused with a 413 problem before the app reads
it (by its Content-Length, or, for a body without one, while buffering it up to the cap).

The 413 goes out at once, as soon as the headers (or the bytes counted so far) show the body is
over the cap; only then is the rest of the body read and dropped (up to :data:`DRAIN_BYTES`
more, for at most :data:`DRAIN_S`), before the response is marked complete (the server reads
nothing once it is). So a client that reads as soon as it has sent part of its body gets the
answer right away, and one that sends its whole body before reading, as most do, gets the 413
instead of a connection reset, which closing on unread data causes. A client that asked
``Expect: 100-continue`` sent no body yet and gets the 413 with nothing to drain."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Coroutine
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_BASE

#: How much of a refused body is read and dropped past the cap; beyond, the connection closes.
DRAIN_BYTES = 64 * 1024 * 1024
#: How long a refused body is drained after the 413 went out; a stalled client is then let go.
DRAIN_S = 30.0


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.max_bytes:
                expects = headers.get(b"expect", b"").lower() == b"100-continue"
                await self._refuse(send, None if expects else self._drain(receive, 0))
                return
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []  # no declared length: buffer, counting, up to the cap
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                more = message.get("more_body", False)
                await self._refuse(send, self._drain(receive, size) if more else None)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _drain(self, receive: Receive, size: int) -> None:
        """Read and drop the rest of a refused body, up to the bound."""
        while size <= self.max_bytes + DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _refuse(self, send: Send, drain: Coroutine[Any, Any, None] | None) -> None:
        """Send the whole 413 at once; then, if ``drain`` is given, read the rest of the body
        (bounded in time) before marking the response complete."""
        payload = json.dumps(
            {
                "type": f"{PROBLEM_TYPE_BASE}body-too-large",
                "title": "Request body too large",
                "status": 413,
                "detail": f"request bodies are limited to {self.max_bytes} bytes",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload, "more_body": drain is not None})
        if drain is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drain, DRAIN_S)
            await send({"type": "http.response.body", "body": b""})
