"""Verify a webhook delivery before trusting it (the receiver's side of the service's webhooks).

The service signs each delivery twice:

- **Standard Webhooks** (https://www.standardwebhooks.com): ``webhook-id`` (the event id),
  ``webhook-timestamp`` (unix seconds) and ``webhook-signature: v1,<base64>`` where
  ``base64 = HMAC-SHA-256(key=base64decode(secret after "whsec_"), msg=f"{id}.{t}." + body)``.
  It covers the event id a receiver deduplicates on; the spec's libraries verify it too.
- **``Unlearn-Signature``** (Stripe's scheme, for receivers written before):
  ``t=<unix seconds>,v1=<hex>`` where ``hex = HMAC-SHA-256(key=secret, msg=f"{t}." + body)``.

After a secret rotation each carries a second signature (the previous secret's) for a while.
Checking the signature rejects forgeries; checking the time against the clock rejects a captured
delivery replayed later. Verify the raw body bytes as received, before any JSON parsing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from unlearn_client.errors import WebhookSignatureError
from unlearn_client.models import WebhookEvent

SIGNATURE_HEADER = "Unlearn-Signature"
DEFAULT_TOLERANCE_S = 300.0
#: A unix time in seconds has 10 digits until the year 2286; more than this is not a time (and
#: ``int()`` of thousands of digits raises ValueError, a float of it OverflowError).
MAX_TIMESTAMP_DIGITS = 12


def _timestamp(value: str) -> int:
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > MAX_TIMESTAMP_DIGITS:
        raise WebhookSignatureError("the signature's timestamp is malformed")
    return int(value)


def sign_webhook(payload: bytes, secret: str, timestamp: int) -> str:
    """The ``v1`` signature of ``payload`` at ``timestamp`` under ``secret`` (hex)."""
    message = f"{timestamp}.".encode() + payload
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def _parse_header(header: str) -> tuple[int, list[str]]:
    """``t`` and every ``v1`` of a signature header; other schemes (``v0=``) are ignored, as
    Stripe's libraries do, so that a future scheme does not break today's receivers."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or not value:
            raise WebhookSignatureError(f"malformed signature header element {part.strip()!r}")
        if name == "t":
            if timestamp is not None:
                raise WebhookSignatureError("the signature header has two timestamps")
            timestamp = _timestamp(value)
        elif name == "v1":
            signatures.append(value)
    if timestamp is None:
        raise WebhookSignatureError("the signature header has no timestamp (`t=`)")
    if not signatures:
        raise WebhookSignatureError("the signature header has no `v1=` signature")
    return timestamp, signatures


def standard_signature(payload: bytes, secret: str, msg_id: str, timestamp: int) -> str:
    """The Standard Webhooks ``v1,<base64>`` signature of ``payload`` (the key is the secret's
    base64 part decoded; base64url, as in secrets made before the service spoke the spec, too)."""
    raw = secret.removeprefix("whsec_").rstrip("=").replace("+", "-").replace("/", "_")
    try:
        key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except binascii.Error:
        key = secret.encode("utf-8")
    message = f"{msg_id}.{timestamp}.".encode() + payload
    return "v1," + base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


def verify_webhook(
    payload: bytes,
    header: str | Mapping[str, str],
    secret: str | Sequence[str],
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> WebhookEvent:
    """Check a delivery's signature against its raw body and return the event.

    ``header`` is the request's headers (any mapping, e.g. ``request.headers``): the Standard
    Webhooks headers are checked when present (and the body's ``id`` must equal the signed
    ``webhook-id``), else ``Unlearn-Signature``; or the ``Unlearn-Signature`` value alone.
    ``secret`` is the webhook's ``whsec_...`` secret, or several (while you switch after a
    rotation): a delivery is genuine when any signature matches any secret (each compared in
    constant time). It is fresh when ``|now - t| <= tolerance_s``. Raises
    :class:`WebhookSignatureError` otherwise, when a header is malformed or missing, or when the
    signed body is not an event; answer such a request with a 4xx and drop it.
    """
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets or not all(isinstance(s, str) and s for s in secrets):
        raise ValueError("give the webhook's secret (a non-empty string, or several)")
    msg_id: str | None = None
    if isinstance(header, str):
        timestamp, signatures = _parse_header(header)
        expected = [sign_webhook(payload, s, timestamp) for s in secrets]
    else:
        headers = {str(k).lower(): str(v) for k, v in header.items()}
        if "webhook-signature" in headers:
            msg_id = headers.get("webhook-id", "")
            if not msg_id:
                raise WebhookSignatureError("the delivery has no `webhook-id` header")
            timestamp = _timestamp(headers.get("webhook-timestamp", ""))
            signatures = headers["webhook-signature"].split()
            expected = [standard_signature(payload, s, msg_id, timestamp) for s in secrets]
        elif SIGNATURE_HEADER.lower() in headers:
            timestamp, signatures = _parse_header(headers[SIGNATURE_HEADER.lower()])
            expected = [sign_webhook(payload, s, timestamp) for s in secrets]
        else:
            raise WebhookSignatureError("the delivery carries no signature header")
    # Every pair is compared (no early exit), each in constant time.
    matched = False
    for candidate in expected:
        for given in signatures:
            matched |= hmac.compare_digest(candidate.encode(), given.encode("utf-8", "replace"))
    if not matched:
        raise WebhookSignatureError("no signature matches the payload under the given secret")
    clock = time.time() if now is None else now
    if abs(clock - timestamp) > tolerance_s:
        raise WebhookSignatureError(
            f"the signature's timestamp is {abs(clock - timestamp):.0f} s away from now "
            f"(tolerance {tolerance_s:g} s): a replayed or delayed delivery"
        )
    event = _event(payload)
    if msg_id is not None and event.id != msg_id:
        raise WebhookSignatureError("the body's event id is not the signed `webhook-id`")
    return event


def _event(payload: bytes) -> WebhookEvent:
    try:
        body: Any = json.loads(payload)
        if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
            raise TypeError("not an event object")
        return WebhookEvent(
            id=str(body["id"]),
            type=str(body["type"]),
            created_at=datetime.fromisoformat(str(body["created_at"])),
            tenant_id=uuid.UUID(str(body["tenant_id"])),
            data=body["data"],
            raw=body,
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise WebhookSignatureError(f"the signed body is not a webhook event: {exc}") from exc
