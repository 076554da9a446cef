"""How a delivery is signed: Standard Webhooks, and the older ``Unlearn-Signature``.

**Standard Webhooks** (https://www.standardwebhooks.com, the spec's ``webhook-*`` headers), so a
receiver can verify with the spec's maintained libraries in any language, and so the event id
it deduplicates on is signed:

- ``webhook-id``: the event id (``evt_…``), the same on every retry and redelivery;
- ``webhook-timestamp``: unix seconds;
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256(key, f"{id}.{timestamp}." + body)>``, one per
  secret separated by a space (during a rotation's overlap the previous secret signs too),
  where ``key`` is the secret's base64 part decoded (``whsec_<base64>``).

**``Unlearn-Signature``** (kept for receivers written before; Stripe's scheme):
``t=<unix seconds>,v1=<hex>[,v1=<hex>]`` where ``hex = HMAC_SHA256(key=secret,
msg=f"{t}." + body)`` and the whole ``whsec_…`` string is the key. It does not cover the
``Unlearn-Event-Id`` header (the body's ``id`` is the same value and is covered).

Secrets are ``whsec_`` and 32 random bytes in standard base64, the spec's form. Those made
before were base64url: the standard signature decodes them as base64url (their true bytes),
which the spec's libraries may not (Python's drops ``-`` and ``_``); rotating such an endpoint's
secret once gives it the spec's form. Pure functions: no clock, no database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
SECRET_BYTES = 32
HEADER = "Unlearn-Signature"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


def new_secret() -> str:
    """``whsec_`` and 32 random bytes in standard base64 (the Standard Webhooks form)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of the Standard Webhooks signature: the base64 after ``whsec_``, decoded.
    Both alphabets are read (secrets made before this scheme are base64url), padding optional;
    a string that is no base64 at all (never one this service made) keys by its UTF-8 bytes."""
    raw = secret.removeprefix(SECRET_PREFIX).rstrip("=").replace("+", "-").replace("/", "_")
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except binascii.Error:
        return secret.encode("utf-8")


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64>``: HMAC-SHA256 of ``f"{msg_id}.{timestamp}." + body``."""
    message = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def standard_signature_header(
    secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> str:
    """``webhook-signature``: one ``v1,…`` per secret, space-separated, the current one first."""
    if not secrets_:
        raise ValueError("a signature needs at least one secret")
    return " ".join(standard_signature(s, msg_id, timestamp, body) for s in secrets_)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA-256 of ``"<timestamp>." + body`` under ``secret`` (UTF-8)."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature_header(secrets_: Sequence[str], timestamp: int, body: bytes) -> str:
    """The header's value: one ``v1=`` per secret, the current secret first."""
    if not secrets_:
        raise ValueError("a signature needs at least one secret")
    parts = [f"t={timestamp}", *(f"v1={signature(s, timestamp, body)}" for s in secrets_)]
    return ",".join(parts)


def headers(
    secrets_: Sequence[str], event_id: str, event_type: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Every signing header of a delivery: Standard Webhooks' and the older ones."""
    return {
        ID_HEADER: event_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: standard_signature_header(secrets_, event_id, timestamp, body),
        "Unlearn-Event-Id": event_id,
        "Unlearn-Event-Type": event_type,
        HEADER: signature_header(secrets_, timestamp, body),
    }
