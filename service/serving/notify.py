"""Redis pub/sub for serving changes: workers announce a new generation, API processes preload.

Correctness never depends on it (every prediction checks the generation itself); it only lets
a process load retrained adapters before the first request needs them.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable

import redis

log = logging.getLogger(__name__)
CHANNEL = "unlearn:serving"


def publish_change(url: str, model_id: uuid.UUID, generation: int) -> None:
    """Announce a model's new serving generation; a failure is logged, never raised."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            client.publish(
                CHANNEL, json.dumps({"model_id": str(model_id), "generation": generation})
            )
        finally:
            client.close()
    except redis.RedisError as error:
        log.warning("serving change not announced: %s", error)


class ChangeListener:
    """A daemon thread that calls ``on_change(model_id)`` for every announcement."""

    def __init__(self, url: str, on_change: Callable[[uuid.UUID], None]) -> None:
        self._url = url
        self._on_change = on_change
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
                pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                pubsub.subscribe(CHANNEL)
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
            model_id = uuid.UUID(json.loads(data)["model_id"])
            self._on_change(model_id)
        except Exception:  # a bad message or a failed preload must not stop the listener
            log.exception("serving change not applied")
