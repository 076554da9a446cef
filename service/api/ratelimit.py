"""Per-key rate limits on the write routes: a token bucket per API key, in each API process.

A key may make ``UNLEARN_WRITE_RATE_PER_MINUTE`` write calls per minute (bursts up to that
many); beyond, a 429 problem with ``Retry-After``. Reads and predictions are not limited here.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from typing import Annotated

from fastapi import Depends, Request

from service.api.auth import admin_key, current_key
from service.db.models import ApiKey
from service.errors import RateLimitedError


class RateLimiter:
    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[uuid.UUID, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key_id: uuid.UUID) -> None:
        """Spend one call of ``key_id``'s budget, or raise RateLimitedError."""
        if self.capacity <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key_id, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate)
            if tokens < 1:
                self._buckets[key_id] = (tokens, now)
                wait = math.ceil((1 - tokens) / self.rate)
                raise RateLimitedError(
                    f"this key may make {int(self.capacity)} write calls a minute",
                    retry_after_s=wait,
                )
            self._buckets[key_id] = (tokens - 1, now)


def limited_key(request: Request, key: Annotated[ApiKey, Depends(current_key)]) -> ApiKey:
    limiter: RateLimiter = request.app.state.rate_limiter
    limiter.take(key.id)
    return key


WriterKey = Annotated[ApiKey, Depends(limited_key)]


def limited_admin(request: Request, key: Annotated[ApiKey, Depends(admin_key)]) -> ApiKey:
    request.app.state.rate_limiter.take(key.id)
    return key


AdminWriterKey = Annotated[ApiKey, Depends(limited_admin)]
