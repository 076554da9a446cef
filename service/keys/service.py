"""Key management for a tenant's admins. Flushes, never commits."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from service.db.models import ApiKey, Role
from service.db.repositories import ApiKeyRepository, TenantRepository
from service.db.repositories.tenants import IssuedKey
from service.keys.schemas import IssuedKeyPublic, KeyCreate, KeyPublic, SecretRotated


def key_public(key: ApiKey) -> KeyPublic:
    return KeyPublic(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        role=key.role.value,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
    )


def _issued(issued: IssuedKey) -> IssuedKeyPublic:
    return IssuedKeyPublic(key=key_public(issued.key), token=issued.token)


def list_keys(session: Session, tenant_id: uuid.UUID) -> list[KeyPublic]:
    return [key_public(k) for k in ApiKeyRepository.from_session(session).of_tenant(tenant_id)]


def issue_key(session: Session, tenant_id: uuid.UUID, body: KeyCreate) -> IssuedKeyPublic:
    issued = ApiKeyRepository.from_session(session).issue(tenant_id, body.name, Role(body.role))
    return _issued(issued)


def rotate_key(session: Session, tenant_id: uuid.UUID, key_id: uuid.UUID) -> IssuedKeyPublic:
    """A new key with the same name and role; the old one is revoked in the same transaction."""
    keys = ApiKeyRepository.from_session(session)
    old = keys.get(key_id, tenant_id=tenant_id)
    issued = keys.issue(tenant_id, old.name, old.role)
    keys.revoke(old.id)
    return _issued(issued)


def revoke_key(session: Session, tenant_id: uuid.UUID, key_id: uuid.UUID) -> None:
    keys = ApiKeyRepository.from_session(session)
    keys.revoke(keys.get(key_id, tenant_id=tenant_id).id)


def rotate_hash_secret(session: Session, tenant_id: uuid.UUID) -> SecretRotated:
    """A new identifier secret for the tenant (the old one is kept, see service/db/hashing.py)."""
    return SecretRotated(version=TenantRepository.from_session(session).rotate_secret(tenant_id))
