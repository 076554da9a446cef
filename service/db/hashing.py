"""Identifier hashes: HMAC-SHA-256 under a per-tenant secret, so no dictionary reverses them.

Every identifier a deletion keeps (certificate hashes, deletion items, the subject, the audit
log, a deleted sample's renamed external id) is :func:`keyed_hash` under its tenant's secret:
32 random bytes made with the tenant, stored in ``tenant_secrets.identifier_secret``, never
returned by the API nor logged. Rows written before keyed hashes keep their plain SHA-256 and say
so (:attr:`HashScheme.sha256`), so that they stay verifiable.

The secret can be rotated: a new version becomes current (new hashes use it) and the older ones
are kept in ``tenant_old_secrets``, so that a row records the version it was hashed with
(``deletion_requests.secret_version``) and stays verifiable, and a look-up of a deleted sample's
name tries every version.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
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
    #: The version of ``secret`` (the tenant's current one); 1 until the first rotation.
    version: int = 1
    #: Some of the tenant's samples were deleted before keyed hashes: they are still named
    #: ``deleted:<sha256>``, and a look-up by external id tries that name too.
    legacy: bool = False
    #: The tenant's retired secrets by version (none until a rotation).
    older: Mapping[int, bytes] = field(default_factory=dict, repr=False, compare=False)
    scheme: ClassVar[HashScheme] = HashScheme.hmac_sha256
    _memo: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __call__(self, value: str) -> str:
        digest = self._memo.get(value)
        if digest is None:
            digest = self._memo[value] = keyed_hash(self.secret, value)
        return digest

    def under(self, scheme: HashScheme, value: str, version: int | None = None) -> str:
        """The hash of ``value`` as a row of ``scheme`` hashed with secret ``version`` (the
        current one by default) stores it."""
        if scheme is HashScheme.sha256:
            return plain_hash(value)
        if version is None or version == self.version:
            return self(value)
        secret = self.older.get(version)
        if secret is None:  # versions are never deleted: a row cannot name an unknown one
            raise LookupError(f"no identifier secret version {version}")
        return keyed_hash(secret, value)

    def every(self, value: str) -> set[str]:
        """The keyed hashes of ``value`` under every version of the secret: what a look-up of
        rows written before a rotation tries."""
        return {self(value), *(keyed_hash(secret, value) for secret in self.older.values())}
