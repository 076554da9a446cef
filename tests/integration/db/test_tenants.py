"""Tenants and API keys: hashed at rest, checked in constant time, revocable."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.models import ApiKey, Role, Tenant
from service.db.repositories import ApiKeyRepository, TenantRepository
from service.errors import DuplicateTenantError, TenantNotFoundError


def test_duplicate_and_unknown_tenant(session: Session, tenant: Tenant) -> None:
    repo = TenantRepository.from_session(session)
    with pytest.raises(DuplicateTenantError):
        repo.create(tenant.name)
    with pytest.raises(TenantNotFoundError):
        repo.by_name("nobody")


def test_key_is_stored_hashed_and_authenticates(session: Session, tenant: Tenant) -> None:
    repo = ApiKeyRepository.from_session(session)
    issued = repo.issue(tenant.id, "ci", Role.admin)
    secret = issued.token.split("_", 2)[2]
    stored = session.scalars(sa.select(ApiKey.key_hash)).all()
    assert all(secret not in value for value in stored)

    key = repo.authenticate(issued.token)
    assert key is not None and key.tenant_id == tenant.id and key.role is Role.admin
    assert key.last_used_at is not None
    assert repo.authenticate(issued.token[:-1] + "x") is None
    assert repo.authenticate("ul_000000000000_" + secret) is None
    assert repo.authenticate("garbage") is None

    repo.revoke(key.id)
    assert repo.authenticate(issued.token) is None
