"""Dashboard login cookies: ``<session id>.<expiry>.<HMAC-SHA256>``, signed with the configured
secret. The cookie names a login row (``dashboard_sessions``); each request checks that the
login has not ended (logout) and that its admin key is still live, so a logout or a revoked key
ends it on the server, whatever copies of the cookie exist."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid

COOKIE = "unlearn_session"


def sign(session_id: uuid.UUID, secret: str, ttl_s: int, *, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + ttl_s)
    body = f"{session_id.hex}.{expires}"
    return f"{body}.{_mac(body, secret)}"


def verify(cookie: str, secret: str, *, now: float | None = None) -> uuid.UUID | None:
    """The session id of a well-signed, unexpired cookie, else None (a malformed one included:
    the header may hold any bytes, which the MAC is compared with as bytes)."""
    body, _, mac = cookie.rpartition(".")
    session_hex, _, expires = body.partition(".")
    if not hmac.compare_digest(mac.encode("utf-8", "replace"), _mac(body, secret).encode()):
        return None
    try:
        session_id, deadline = uuid.UUID(hex=session_hex), int(expires)
    except ValueError:
        return None
    return session_id if deadline > (time.time() if now is None else now) else None


def _mac(body: str, secret: str) -> str:
    digest = hmac.new(secret.encode(), body.encode("utf-8", "replace"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")
