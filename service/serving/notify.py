"""Redis pub/sub for serving changes: workers announce a new generation, API processes preload;
collectors announce deleted artifacts, every API process drops them from memory.

Correctness never depends on it (every prediction checks the generation itself, and a reload
drops what the model no longer serves); it only lets a process load retrained adapters before
the first request needs them, and forget collected ones before the next request comes.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import redis

log = logging.getLogger(__name__)
CHANNEL = "unlearn:serving"


def channel(url: str) -> str:
    """The channel of the Redis database ``url`` names: pub/sub ignores database numbers, so
    services that share a Redis server on different databases would hear each other's models."""
    db = redis.ConnectionPool.from_url(url).connection_kwargs.get("db", 0)
    return f"{CHANNEL}:{db}"


#: Collected artifacts announced per message.
COLLECTED_PER_MESSAGE = 100


def publish_change(url: str, model_id: uuid.UUID, generation: int) -> None:
    """Announce a model's new serving generation; a failure is logged, never raised."""
    _publish(url, [{"model_id": str(model_id), "generation": generation}])


def publish_collected(url: str, refs: Sequence[str]) -> None:
    """Announce artifacts deleted from the store, so that every process drops them from memory
    at once (each also drops them when it next reloads the model that served them)."""
    _publish(
        url,
        [
            {"collected": list(refs[i : i + COLLECTED_PER_MESSAGE])}
            for i in range(0, len(refs), COLLECTED_PER_MESSAGE)
        ],
    )


def _publish(url: str, messages: list[dict[str, Any]]) -> None:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            name = channel(url)
            for message in messages:
                client.publish(name, json.dumps(message))
        finally:
            client.close()
    except redis.RedisError as error:
        log.warning("serving change not announced: %s", error)


class ChangeListener:
    """A daemon thread that calls ``on_change(model_id)`` for every new generation announced,
    and ``on_collected(refs)`` for every announcement of collected artifacts."""

    def __init__(
        self,
        url: str,
        on_change: Callable[[uuid.UUID], None],
        on_collected: Callable[[list[str]], None] | None = None,
    ) -> None:
        self._url = url
        self._on_change = on_change
        self._on_collected = on_collected
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serving-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                client = redis.Redis.from_url(self._url, socket_connect_timeout=2)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel(self._url))
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None:
                        self._handle(message["data"])
                pubsub.close()
                client.close()
            except redis.RedisError as error:
                log.warning("serving listener reconnecting: %s", error)
                self._stopped.wait(2)

    def _handle(self, data: bytes) -> None:
        try:
            message = json.loads(data)
            if "collected" in message:
                if self._on_collected is not None:
                    self._on_collected([str(ref) for ref in message["collected"]])
            else:
                self._on_change(uuid.UUID(message["model_id"]))
        except Exception:  # a bad message or a failed preload must not stop the listener
            log.exception("serving change not applied")
