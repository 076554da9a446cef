"""Dashboard login cookies: ``<key id>.<expiry>.<HMAC-SHA256>``, signed with the configured
secret. The cookie names an admin API key; each request checks that the key is still live, so
revoking the key ends its dashboard sessions too."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid

COOKIE = "unlearn_session"


def sign(key_id: uuid.UUID, secret: str, ttl_s: int, *, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + ttl_s)
    body = f"{key_id.hex}.{expires}"
    return f"{body}.{_mac(body, secret)}"


def verify(cookie: str, secret: str, *, now: float | None = None) -> uuid.UUID | None:
    """The key id of a well-signed, unexpired cookie, else None."""
    body, _, mac = cookie.rpartition(".")
    key_hex, _, expires = body.partition(".")
    if not hmac.compare_digest(mac, _mac(body, secret)):
        return None
    try:
        key_id, deadline = uuid.UUID(hex=key_hex), int(expires)
    except ValueError:
        return None
    return key_id if deadline > (time.time() if now is None else now) else None


def _mac(body: str, secret: str) -> str:
    digest = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")
