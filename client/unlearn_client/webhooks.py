"""Verify a webhook delivery before trusting it (the receiver's side of the service's webhooks).

The service signs each delivery as Stripe does: ``Unlearn-Signature: t=<unix seconds>,v1=<hex>``
where ``hex = HMAC-SHA-256(key=secret, msg=f"{t}.".encode() + body)``; after a secret rotation
the header carries a second ``v1=`` (the previous secret's) for a while. Checking the signature
rejects forgeries; checking ``t`` against the clock rejects a captured delivery replayed later.
Verify the raw body bytes as received, before any JSON parsing or re-encoding.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from unlearn_client.errors import WebhookSignatureError
from unlearn_client.models import WebhookEvent

SIGNATURE_HEADER = "Unlearn-Signature"
DEFAULT_TOLERANCE_S = 300.0


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
            if timestamp is not None or not value.isascii() or not value.isdigit():
                raise WebhookSignatureError("the signature header's timestamp is malformed")
            timestamp = int(value)
        elif name == "v1":
            signatures.append(value)
    if timestamp is None:
        raise WebhookSignatureError("the signature header has no timestamp (`t=`)")
    if not signatures:
        raise WebhookSignatureError("the signature header has no `v1=` signature")
    return timestamp, signatures


def verify_webhook(
    payload: bytes,
    header: str,
    secret: str | Sequence[str],
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> WebhookEvent:
    """Check a delivery's ``Unlearn-Signature`` header against its raw body and return the event.

    ``secret`` is the webhook's ``whsec_...`` secret, or several (while you switch after a
    rotation): a delivery is genuine when any ``v1`` of the header matches any secret (each
    compared in constant time). It is fresh when ``|now - t| <= tolerance_s``. Raises
    :class:`WebhookSignatureError` otherwise, when the header is malformed, or when the signed
    body is not an event; answer such a request with a 4xx and drop it.
    """
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets or not all(isinstance(s, str) and s for s in secrets):
        raise ValueError("give the webhook's secret (a non-empty string, or several)")
    timestamp, signatures = _parse_header(header)
    expected = [sign_webhook(payload, s, timestamp) for s in secrets]
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
    return _event(payload)


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
