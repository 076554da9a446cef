"""The webhook dispatcher: delivers committed events, outside any transaction, and retries.

One delivery goes through three steps:

1. **Claim** (one short transaction): the due deliveries (``WebhookRepository.due``: pending,
   due, not leased, the oldest pending one of its endpoint, none of its endpoint in flight;
   fair across tenants: at most ``UNLEARN_WEBHOOK_TENANT_IN_FLIGHT`` of a tenant in flight,
   the least busy tenant first) get a lease (``leased_until``, a ``lease_id``) and the claim
   commits. A dispatcher that dies from here on leaves a lease that
   ends after ``UNLEARN_WEBHOOK_LEASE_S``; then another claims the delivery again, so nothing
   is lost (a receiver may see an event twice: it deduplicates on ``webhook-id``).
2. **POST** with no transaction open: the URL is checked again (``urls.check``: DNS may have
   changed since registration) and the connection goes to the address that was checked;
   ``httpx`` with no redirects, within ``UNLEARN_WEBHOOK_TIMEOUT_S`` in all (the DNS lookup,
   each phase, and the whole attempt: :mod:`service.webhooks.deadline`); the answer's body is
   never read. Signed twice: Standard Webhooks and ``Unlearn-Signature`` (:mod:`signing`).
3. **Record** (one short transaction, the delivery locked, the lease still ours): an attempt row;
   a 2xx is `delivered`, anything else waits an exponential back-off (capped, jittered), and
   after ``UNLEARN_WEBHOOK_MAX_ATTEMPTS`` the delivery is `failed`.

:class:`WebhookDispatcher` runs these in a daemon thread (the API's lifespan starts one) or in
the foreground (``unlearn webhooks deliver``), POSTing to several endpoints at once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import httpx
from sqlalchemy.orm import Session, sessionmaker

from service.db.engine import unit_of_work
from service.db.models import DeliveryState
from service.db.models.base import utcnow
from service.db.repositories import WebhookRepository
from service.db.repositories.webhooks import CANCELLED
from service.observability.metrics import WEBHOOK_ATTEMPTS
from service.settings import Settings
from service.webhooks import signing, urls
from service.webhooks.deadline import Deadline

log = logging.getLogger(__name__)
USER_AGENT = "unlearn-webhooks/1"
#: POSTs in flight at once, per dispatcher (each to another endpoint: one per endpoint).
CONCURRENCY = 8


@dataclass(frozen=True)
class DeliveryPolicy:
    timeout_s: float
    lease_s: float
    backoff_s: float
    backoff_max_s: float
    max_attempts: int
    secret_overlap_s: float
    production: bool
    poll_s: float = 1.0
    tenant_in_flight: int = 4

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        return cls(
            timeout_s=settings.webhook_timeout_s,
            lease_s=settings.webhook_lease_s,
            backoff_s=settings.webhook_backoff_s,
            backoff_max_s=settings.webhook_backoff_max_s,
            max_attempts=settings.webhook_max_attempts,
            secret_overlap_s=settings.webhook_secret_overlap_s,
            production=settings.production,
            poll_s=settings.webhook_poll_s,
            tenant_in_flight=settings.webhook_tenant_in_flight,
        )


@dataclass(frozen=True)
class Claimed:
    """What a POST needs, read in the claim's transaction (nothing is read during the POST)."""

    delivery_id: uuid.UUID
    lease_id: uuid.UUID
    url: str
    secrets: tuple[str, ...]  # the current secret first; the previous one during an overlap
    event_id: str
    event_type: str
    body: bytes


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def backoff(attempts: int, base_s: float, cap_s: float, rng: Callable[[], float]) -> float:
    """Exponential with a cap and "equal" jitter: a wait drawn uniformly between half and all of
    ``min(cap, base x 2^(attempts-1))``. Half at least, so the attempts span a known minimum
    (the defaults: over 24 h before `failed`); random in the other half, so the retries of many
    deliveries that failed together (a receiver that was down) spread out."""
    exponent = min(max(attempts - 1, 0), 62)
    return (0.5 + 0.5 * rng()) * min(cap_s, base_s * 2.0**exponent)


def claim(factory: sessionmaker[Session], policy: DeliveryPolicy, limit: int) -> list[Claimed]:
    """Lease up to ``limit`` due deliveries, in one committed transaction."""
    claimed = []
    with unit_of_work(factory) as session:
        webhooks = WebhookRepository.from_session(session)
        webhooks.lock_claims()
        now = utcnow()
        for delivery in webhooks.due(limit, per_tenant=policy.tenant_in_flight, now=now):
            webhook = webhooks.webhook(delivery.webhook_id)
            if webhook.deleted_at is not None:  # deleted while it was being redelivered
                delivery.state = DeliveryState.failed
                delivery.last_error = CANCELLED
                continue
            lease_id = webhooks.lease(delivery, timedelta(seconds=policy.lease_s))
            keys = [webhook.secret]
            if webhook.previous_secret and (webhook.previous_secret_until or now) > now:
                keys.append(webhook.previous_secret)
            claimed.append(
                Claimed(
                    delivery.id,
                    lease_id,
                    webhook.url,
                    tuple(keys),
                    delivery.event.id,
                    delivery.event.type,
                    delivery.event.body.encode("utf-8"),
                )
            )
    return claimed


def _pinned(target: urls.Target) -> tuple[str, dict[str, str], dict[str, str]]:
    """The URL with its host replaced by the checked address, the ``Host`` header and (for
    https) the TLS server name, so the connection goes where the policy looked."""
    original = httpx.URL(target.url)
    address = target.addresses[0].split("%", 1)[0]
    if urls.literal(target.host) is not None or address == target.host:
        return target.url, {}, {}
    default_port = 443 if target.scheme == "https" else 80
    host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
    pinned = str(original.copy_with(host=address))
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return pinned, {"Host": host_header}, extensions


def post(
    claimed: Claimed,
    policy: DeliveryPolicy,
    client: httpx.Client,
    resolver: urls.Resolver = urls.system_resolver,
) -> Outcome:
    """One attempt: check the URL again, sign, POST; never raises."""
    started = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    timestamp = int(time.time())
    with Deadline(policy.timeout_s) as deadline:
        try:
            target = urls.check(
                claimed.url,
                production=policy.production,
                resolver=resolver,
                timeout_s=deadline.remaining(),
            )
        except urls.ResolveTimeoutError:
            return Outcome(None, f"timed out after {policy.timeout_s:g} s (DNS lookup)", took())
        except urls.UrlRefusedError as error:
            return Outcome(None, f"refused: {error}", took())
        url, host, extensions = _pinned(target)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **signing.headers(
                claimed.secrets, claimed.event_id, claimed.event_type, timestamp, claimed.body
            ),
            **host,
        }
        try:
            request = client.build_request(
                "POST",
                url,
                content=claimed.body,
                headers=headers,
                extensions={**extensions, "trace": deadline.trace},
            )
            response = client.send(request, stream=True)  # the answer's body is never read
            response.close()
        except httpx.HTTPError as error:
            if deadline.expired or isinstance(error, httpx.TimeoutException):
                return Outcome(None, f"timed out after {policy.timeout_s:g} s", took())
            return Outcome(None, f"{type(error).__name__}: {error}"[:500], took())
    status = response.status_code
    if 200 <= status < 300:
        return Outcome(status, None, took())
    if 300 <= status < 400:
        return Outcome(status, f"HTTP {status}: redirects are not followed", took())
    return Outcome(status, f"HTTP {status}", took())


def record(
    factory: sessionmaker[Session],
    claimed: Claimed,
    outcome: Outcome,
    policy: DeliveryPolicy,
    rng: Callable[[], float] = random.random,
) -> str | None:
    """Record the attempt and the delivery's next state; the outcome's name (`delivered`,
    `retried`, `failed`), or None when the lease was lost meanwhile (another dispatcher owns
    the delivery now: this attempt is not recorded)."""
    with unit_of_work(factory) as session:
        webhooks = WebhookRepository.from_session(session)
        delivery = webhooks.get_for_update(claimed.delivery_id)
        if delivery is None or delivery.lease_id != claimed.lease_id:
            return None
        now = utcnow()
        webhooks.record_attempt(
            delivery,
            at=now,
            status_code=outcome.status_code,
            error=outcome.error,
            duration_ms=outcome.duration_ms,
        )
        if outcome.ok:
            delivery.state = DeliveryState.delivered
            delivery.delivered_at = now
            result = "delivered"
        elif delivery.attempt_count >= policy.max_attempts:
            delivery.state = DeliveryState.failed
            result = "failed"
        else:
            wait = backoff(delivery.attempt_count, policy.backoff_s, policy.backoff_max_s, rng)
            delivery.next_attempt_at = now + timedelta(seconds=wait)
            result = "retried"
    WEBHOOK_ATTEMPTS.labels(result).inc()
    if result != "delivered":
        log.info(
            "webhook delivery %s attempt %s: %s",
            claimed.delivery_id,
            result,
            outcome.error or outcome.status_code,
        )
    return result


def deliver(
    factory: sessionmaker[Session],
    claimed: Claimed,
    policy: DeliveryPolicy,
    client: httpx.Client,
    resolver: urls.Resolver = urls.system_resolver,
) -> str | None:
    return record(factory, claimed, post(claimed, policy, client, resolver), policy)


def make_client(policy: DeliveryPolicy) -> httpx.Client:
    """No redirects, the timeout on every phase, no proxy from the environment (the connection
    must go to the checked address)."""
    return httpx.Client(
        timeout=policy.timeout_s,
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=0),
    )


def deliver_due(
    factory: sessionmaker[Session],
    policy: DeliveryPolicy,
    client: httpx.Client,
    resolver: urls.Resolver = urls.system_resolver,
    *,
    limit: int = CONCURRENCY,
) -> int:
    """Claim and deliver what is due now, one after the other; returns how many were tried
    (tests and one-shot callers; the dispatcher runs them concurrently)."""
    claimed = claim(factory, policy, limit)
    for item in claimed:
        deliver(factory, item, policy, client, resolver)
    return len(claimed)


class WebhookDispatcher:
    """Claims due deliveries whenever a POST slot is free, every ``poll_s`` or at once when
    woken (after a commit that wrote events), and POSTs them on a small thread pool.
    ``start``/``stop`` run it in a daemon thread; ``run`` runs it in the caller's thread until
    ``stop`` (the CLI's SIGTERM)."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        settings: Settings,
        *,
        resolver: urls.Resolver = urls.system_resolver,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self._factory = factory
        self._policy = DeliveryPolicy.from_settings(settings)
        self._resolver = resolver
        self._concurrency = concurrency
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self.run, name="webhook-dispatcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop claiming; POSTs in flight finish (within the timeout) and are recorded."""
        self._stopped.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s if timeout_s is not None else self._policy.lease_s)

    def run(self) -> None:
        in_flight: set[Future[str | None]] = set()
        with (
            make_client(self._policy) as client,
            ThreadPoolExecutor(self._concurrency, thread_name_prefix="webhook-post") as pool,
        ):
            while not self._stopped.is_set():
                self._wake.clear()
                in_flight = {f for f in in_flight if not f.done()}
                free = self._concurrency - len(in_flight)
                try:
                    claimed = claim(self._factory, self._policy, free) if free > 0 else []
                except Exception:  # the database may be restarting; try again next round
                    log.exception("webhook dispatcher round failed")
                    claimed = []
                for item in claimed:
                    future = pool.submit(self._deliver, item, client)
                    future.add_done_callback(lambda _: self._wake.set())
                    in_flight.add(future)
                if claimed and len(claimed) == free:
                    continue  # maybe more are due: claim again once a slot frees (woken)
                self._wake.wait(self._policy.poll_s)

    def _deliver(self, claimed: Claimed, client: httpx.Client) -> str | None:
        try:
            return deliver(self._factory, claimed, self._policy, client, self._resolver)
        except Exception:  # recording failed: the lease ends and the delivery is claimed again
            log.exception("webhook delivery %s not recorded", claimed.delivery_id)
            return None
