"""Tenants, their API keys (stored as SHA-256 hashes, never in clear) and the secret of their
identifier hashes."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from service.db.hashing import SECRET_BYTES, new_secret
from service.db.models.base import Base, CreatedAt, Sha256Hex, UuidPk, str_enum


class Role(StrEnum):
    app = "app"
    admin = "admin"


class Tenant(UuidPk, CreatedAt, Base):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(sa.String(200), unique=True)


class TenantSecret(CreatedAt, Base):
    """The key of a tenant's identifier hashes (service/db/hashing.py), apart from the tenant
    row so that nothing that shows a tenant reads it; no API returns it, no log prints it."""

    __tablename__ = "tenant_secrets"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    identifier_secret: Mapped[bytes] = mapped_column(
        sa.LargeBinary(SECRET_BYTES), default=new_secret
    )
    # The tenant existed before keyed hashes: some of its deleted samples may still be named
    # `deleted:<sha256>`.
    legacy_id_hashes: Mapped[bool] = mapped_column(default=False)
    # The version of `identifier_secret`: a rotation moves the secret to TenantOldSecret and
    # makes a new one, one version up.
    secret_version: Mapped[int] = mapped_column(default=1, server_default="1")


class TenantOldSecret(CreatedAt, Base):
    """A retired identifier secret: kept (forever) so that the rows hashed with it stay
    verifiable; read only by the tenant's hasher, never returned nor logged."""

    __tablename__ = "tenant_old_secrets"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    identifier_secret: Mapped[bytes] = mapped_column(sa.LargeBinary(SECRET_BYTES))


class ApiKey(UuidPk, CreatedAt, Base):
    __tablename__ = "api_keys"

    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    prefix: Mapped[str] = mapped_column(sa.String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(Sha256Hex)
    role: Mapped[Role] = mapped_column(str_enum(Role))
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class DashboardSession(UuidPk, CreatedAt, Base):
    """A dashboard login: the cookie names this row, so logging out ends it on the server (a
    copied cookie stops working), and revoking the key ends every session of it."""

    __tablename__ = "dashboard_sessions"

    key_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("api_keys.id", ondelete="CASCADE"), index=True
    )
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
