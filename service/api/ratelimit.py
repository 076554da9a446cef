"""Per-key rate limits on the write routes and identifier checks: a token bucket per API key.

A key may make ``UNLEARN_WRITE_RATE_PER_MINUTE`` write calls per minute (bursts up to that
many); beyond, a 429 problem with ``Retry-After``. Identifier checks (``POST
/deletions/{id}/verify``, a read that answers whether a guessed id was deleted) have buckets of
their own, ``UNLEARN_VERIFY_RATE_PER_MINUTE``. Other reads and predictions are not limited here.

With Redis (``UNLEARN_RATE_LIMIT_URL``, by default the broker when it is Redis) the buckets live
there and every API replica spends the same budget: one script reads, refills and spends a
bucket atomically on Redis's own clock. Without it (the embedded default), and for as long as
Redis does not answer, each process keeps its own buckets: the limit then holds per process.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from typing import Annotated, Protocol

import redis
from fastapi import Depends, Request

from service.api.auth import admin_key, current_key
from service.db.models import ApiKey
from service.errors import RateLimitedError

log = logging.getLogger(__name__)


class RateLimiter(Protocol):
    def take(self, key_id: uuid.UUID) -> None:
        """Spend one call of ``key_id``'s budget, or raise RateLimitedError."""
        ...


def _limited(capacity: float, tokens: float, rate: float, what: str) -> RateLimitedError:
    wait = math.ceil((1 - tokens) / rate)
    return RateLimitedError(
        f"this key may make {int(capacity)} {what} a minute", retry_after_s=wait
    )


class LocalRateLimiter:
    """The buckets in this process."""

    def __init__(self, per_minute: int, *, what: str = "write calls") -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.what = what
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
                raise _limited(self.capacity, tokens, self.rate, self.what)
            self._buckets[key_id] = (tokens - 1, now)


#: KEYS[1] the bucket; ARGV capacity, tokens per second. Returns {1 if spent else 0, tokens}.
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local spent = 0
if tokens >= 1 then
  tokens = tokens - 1
  spent = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 60)
return {spent, tostring(tokens)}
"""


class RedisRateLimiter:
    """The buckets in Redis, shared by every API process; this process's own buckets while
    Redis does not answer (a write is not refused because the limiter is down)."""

    PREFIX = "unlearn:ratelimit:"

    def __init__(
        self,
        per_minute: int,
        url: str,
        *,
        timeout_s: float = 0.5,
        what: str = "write calls",
        prefix: str = PREFIX,
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.what = what
        self.prefix = prefix
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._take = self._client.register_script(_TAKE)
        self._fallback = LocalRateLimiter(per_minute, what=what)
        self._degraded = False

    def take(self, key_id: uuid.UUID) -> None:
        if self.capacity <= 0:
            return
        try:
            spent, tokens = self._take(
                keys=[self.prefix + str(key_id)], args=[self.capacity, self.rate]
            )
        except redis.RedisError as error:
            if not self._degraded:
                log.warning("rate limit: Redis unreachable (%s); limiting per process", error)
                self._degraded = True
            self._fallback.take(key_id)
            return
        if self._degraded:
            log.info("rate limit: Redis answers again; the limit is shared again")
            self._degraded = False
        if not int(spent):
            raise _limited(self.capacity, float(tokens), self.rate, self.what)


def rate_limiter(per_minute: int, redis_url: str) -> RateLimiter:
    """The shared limiter when there is a Redis URL, else this process's."""
    if redis_url and per_minute > 0:
        return RedisRateLimiter(per_minute, redis_url)
    return LocalRateLimiter(per_minute)


def verify_rate_limiter(per_minute: int, redis_url: str) -> RateLimiter:
    """The limit of identifier checks: buckets of their own (a key's writes do not spend them)."""
    what = "identifier checks"
    if redis_url and per_minute > 0:
        prefix = RedisRateLimiter.PREFIX + "verify:"
        return RedisRateLimiter(per_minute, redis_url, what=what, prefix=prefix)
    return LocalRateLimiter(per_minute, what=what)


def limited_key(request: Request, key: Annotated[ApiKey, Depends(current_key)]) -> ApiKey:
    limiter: RateLimiter = request.app.state.rate_limiter
    limiter.take(key.id)
    return key


WriterKey = Annotated[ApiKey, Depends(limited_key)]


def limited_admin(request: Request, key: Annotated[ApiKey, Depends(admin_key)]) -> ApiKey:
    request.app.state.rate_limiter.take(key.id)
    return key


AdminWriterKey = Annotated[ApiKey, Depends(limited_admin)]


def limited_verifier(request: Request, key: Annotated[ApiKey, Depends(current_key)]) -> ApiKey:
    """Any key of the tenant may check an identifier against a deletion (a read), but each
    answer says whether a guessed id was deleted: checks are limited on their own budget."""
    request.app.state.verify_rate_limiter.take(key.id)
    return key


VerifierKey = Annotated[ApiKey, Depends(limited_verifier)]
