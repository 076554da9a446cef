"""Tenants and API keys. A key is shown once; only its SHA-256 is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import timedelta
from typing import NamedTuple

import sqlalchemy as sa

from service.db.hashing import TenantHasher, new_secret
from service.db.models import (
    ApiKey,
    DashboardSession,
    Role,
    Tenant,
    TenantOldSecret,
    TenantSecret,
)
from service.db.models.base import utcnow
from service.db.repositories.base import Repository
from service.errors import DuplicateTenantError, KeyNotFoundError, TenantNotFoundError

KEY_PREFIX_BYTES = 6


LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class IssuedKey(NamedTuple):
    key: ApiKey
    token: str  # "ul_<prefix>_<secret>": returned to the caller once, never stored


class TenantRepository(Repository):
    def create(self, name: str) -> Tenant:
        if self.session.scalar(sa.select(Tenant.id).where(Tenant.name == name)) is not None:
            raise DuplicateTenantError(f"a tenant named {name!r} exists")
        tenant = Tenant(name=name)
        self.session.add(tenant)
        self.session.flush()
        self.session.add(TenantSecret(tenant_id=tenant.id))
        self.session.flush()
        return tenant

    def get(self, tenant_id: uuid.UUID) -> Tenant:
        tenant = self.session.get(Tenant, tenant_id)
        if tenant is None:
            raise TenantNotFoundError(f"no tenant {tenant_id}")
        return tenant

    def hasher(self, tenant_id: uuid.UUID) -> TenantHasher:
        """The tenant's identifier hasher (one primary-key read, and one more for the retired
        secrets once the tenant rotated): made once per unit of work and passed along, so that
        a deletion reads the secret once."""
        secret = self._secret(tenant_id)
        older: dict[int, bytes] = {}
        if secret.secret_version > 1:
            rows = self.session.execute(
                sa.select(TenantOldSecret.version, TenantOldSecret.identifier_secret).where(
                    TenantOldSecret.tenant_id == tenant_id
                )
            )
            older = {version: old for version, old in rows}
        return TenantHasher(
            secret.identifier_secret,
            version=secret.secret_version,
            older=older,
            legacy=secret.legacy_id_hashes,
        )

    def rotate_secret(self, tenant_id: uuid.UUID) -> int:
        """Make a new identifier secret current, one version up, and keep the old one (rows
        hashed with it stay verifiable); returns the new version. The secret row is locked, so
        two rotations cannot both retire the same version."""
        self.get(tenant_id)
        secret = self.session.get(TenantSecret, tenant_id, with_for_update=True)
        if secret is None:  # every tenant gets one when created, or from the migration
            raise LookupError(f"tenant {tenant_id} has no identifier secret")
        self.session.add(
            TenantOldSecret(
                tenant_id=tenant_id,
                version=secret.secret_version,
                identifier_secret=secret.identifier_secret,
            )
        )
        secret.identifier_secret = new_secret()
        secret.secret_version += 1
        self.session.flush()
        return secret.secret_version

    def _secret(self, tenant_id: uuid.UUID) -> TenantSecret:
        secret = self.session.get(TenantSecret, tenant_id)
        if secret is None:  # every tenant gets one when created, or from the migration
            raise LookupError(f"tenant {tenant_id} has no identifier secret")
        return secret

    def by_name(self, name: str) -> Tenant:
        tenant = self.session.scalar(sa.select(Tenant).where(Tenant.name == name))
        if tenant is None:
            raise TenantNotFoundError(f"no tenant named {name!r}")
        return tenant


class ApiKeyRepository(Repository):
    def issue(self, tenant_id: uuid.UUID, name: str, role: Role) -> IssuedKey:
        TenantRepository.from_session(self.session).get(tenant_id)
        prefix = secrets.token_hex(KEY_PREFIX_BYTES)
        secret = secrets.token_urlsafe(32)
        key = ApiKey(
            tenant_id=tenant_id, name=name, prefix=prefix, key_hash=hash_key(secret), role=role
        )
        self.session.add(key)
        self.session.flush()
        return IssuedKey(key, f"ul_{prefix}_{secret}")

    def authenticate(self, token: str) -> ApiKey | None:
        """The live key behind ``token``, or None. The secret is compared in constant time."""
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != "ul":
            return None
        _, prefix, secret = parts
        key = self.session.scalar(sa.select(ApiKey).where(ApiKey.prefix == prefix))
        expected = key.key_hash if key is not None else hash_key("")
        matches = hmac.compare_digest(expected, hash_key(secret))
        if key is None or not matches or key.revoked_at is not None:
            return None
        now = utcnow()
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
            key.last_used_at = now  # a write per minute, not per request
        return key

    def get(self, key_id: uuid.UUID, *, tenant_id: uuid.UUID) -> ApiKey:
        """The tenant's key, or KeyNotFoundError (another tenant's key is not found either)."""
        key = self.session.get(ApiKey, key_id)
        if key is None or key.tenant_id != tenant_id:
            raise KeyNotFoundError(f"no API key {key_id}")
        return key

    def of_tenant(self, tenant_id: uuid.UUID) -> list[ApiKey]:
        return list(
            self.session.scalars(
                sa.select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at)
            )
        )

    def revoke(self, key_id: uuid.UUID) -> None:
        key = self.session.get(ApiKey, key_id)
        if key is not None and key.revoked_at is None:
            key.revoked_at = utcnow()


class DashboardSessionRepository(Repository):
    """Dashboard logins, kept on the server so that a logout ends one for good."""

    def start(self, key_id: uuid.UUID, ttl: timedelta) -> DashboardSession:
        now = utcnow()
        self.session.execute(  # ended or expired logins are of no use to anyone
            sa.delete(DashboardSession).where(
                sa.or_(DashboardSession.expires_at <= now, DashboardSession.ended_at.is_not(None))
            )
        )
        login = DashboardSession(key_id=key_id, expires_at=now + ttl)
        self.session.add(login)
        self.session.flush()
        return login

    def key_of(self, session_id: uuid.UUID) -> ApiKey | None:
        """The live key behind a login that has neither ended nor expired, else None."""
        login = self.session.get(DashboardSession, session_id)
        if login is None or login.ended_at is not None or login.expires_at <= utcnow():
            return None
        key = self.session.get(ApiKey, login.key_id)
        return key if key is not None and key.revoked_at is None else None

    def end(self, session_id: uuid.UUID) -> None:
        login = self.session.get(DashboardSession, session_id)
        if login is not None and login.ended_at is None:
            login.ended_at = utcnow()
