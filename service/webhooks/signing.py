"""The ``Unlearn-Signature`` header: Stripe's scheme, so receivers can reject forgeries and
replays.

``t=<unix seconds>,v1=<hex>[,v1=<hex>]`` where each ``hex`` is
``HMAC_SHA256(key=secret, msg=f"{t}." + body)``; the whole ``whsec_…`` string is the key. During
a rotation's overlap both secrets sign (two ``v1=``). Pure functions: no clock, no database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
SECRET_BYTES = 32
HEADER = "Unlearn-Signature"


def new_secret() -> str:
    """``whsec_`` and 32 random bytes, base64url without padding."""
    raw = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=")
    return SECRET_PREFIX + raw.decode("ascii")


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
