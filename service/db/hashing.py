"""Identifier hashes: HMAC-SHA-256 under a per-tenant secret, so no dictionary reverses them.

Every identifier a deletion keeps (certificate hashes, deletion items, the subject, the audit
log, a deleted sample's renamed external id) is :func:`keyed_hash` under its tenant's secret:
32 random bytes made with the tenant, stored in ``tenants.identifier_secret``, never returned
by the API nor logged. Rows written before keyed hashes keep their plain SHA-256 and say so
(:attr:`HashScheme.sha256`), so that they stay verifiable.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

SECRET_BYTES = 32


class HashScheme(StrEnum):
    sha256 = "sha256"  # rows written before keyed hashes: a dictionary reverses e-mail-like ids
    hmac_sha256 = "hmac-sha256"


def new_secret() -> bytes:
    """A fresh tenant secret."""
    return secrets.token_bytes(SECRET_BYTES)


def keyed_hash(secret: bytes, value: str) -> str:
    """HMAC-SHA-256 of ``value`` under ``secret``, in hex."""
    return hmac.digest(secret, value.encode(), "sha256").hex()


def plain_hash(value: str) -> str:
    """SHA-256 of ``value`` in hex: the scheme of rows written before keyed hashes."""
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class TenantHasher:
    """Hashes one tenant's identifiers (its secret stays out of ``repr``). Made for one unit of
    work: it remembers what it hashed, since a deletion hashes each id up to three times."""

    secret: bytes = field(repr=False)
    #: Some of the tenant's samples were deleted before keyed hashes: they are still named
    #: ``deleted:<sha256>``, and a look-up by external id tries that name too.
    legacy: bool = False
    scheme: ClassVar[HashScheme] = HashScheme.hmac_sha256
    _memo: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __call__(self, value: str) -> str:
        digest = self._memo.get(value)
        if digest is None:
            digest = self._memo[value] = keyed_hash(self.secret, value)
        return digest

    def under(self, scheme: HashScheme, value: str) -> str:
        """The hash of ``value`` as a row of ``scheme`` stores it."""
        return plain_hash(value) if scheme is HashScheme.sha256 else self(value)
