"""The write rate limit in Redis: every replica spends one budget; without Redis, each its own."""

from __future__ import annotations

import uuid

from service.api.ratelimit import LocalRateLimiter, RedisRateLimiter, rate_limiter
from service.errors import RateLimitedError
from tests.integration.services import free_port, require_redis


def _spent(limiter: object, key: uuid.UUID, calls: int) -> int:
    taken = 0
    for _ in range(calls):
        try:
            limiter.take(key)  # type: ignore[attr-defined]
        except RateLimitedError:
            continue
        taken += 1
    return taken


def _refusal(limiter: RedisRateLimiter, key: uuid.UUID) -> RateLimitedError:
    for _ in range(1000):
        try:
            limiter.take(key)
        except RateLimitedError as error:
            return error
    raise AssertionError("never refused")


def test_two_replicas_share_one_budget() -> None:
    url = require_redis()
    replicas = [RedisRateLimiter(6000, url), RedisRateLimiter(6000, url)]  # 100 a second
    key = uuid.uuid4()
    taken = sum(_spent(replica, key, 4000) for replica in replicas)
    # 6000 of burst, plus the refill during the calls (100/s): never twice the burst.
    assert 6000 <= taken < 6000 + 1000, taken
    assert int(_refusal(replicas[1], key).headers["Retry-After"]) >= 1
    assert _spent(replicas[0], uuid.uuid4(), 10) == 10  # another key has its own budget


def test_per_process_buckets_without_redis() -> None:
    """The evidence above can fail: buckets per process let two replicas spend twice."""
    key = uuid.uuid4()
    replicas = [LocalRateLimiter(60), LocalRateLimiter(60)]
    assert sum(_spent(replica, key, 100) for replica in replicas) == 120


def test_an_unreachable_redis_limits_per_process() -> None:
    limiter = RedisRateLimiter(60, f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    assert _spent(limiter, uuid.uuid4(), 100) == 60


def test_the_embedded_default_is_per_process() -> None:
    assert isinstance(rate_limiter(60, ""), LocalRateLimiter)
    assert isinstance(rate_limiter(60, "redis://127.0.0.1:6379/0"), RedisRateLimiter)
