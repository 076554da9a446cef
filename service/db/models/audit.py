"""The append-only, hash-chained audit log (UPDATE and DELETE are refused by triggers)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from service.db.models.base import Base, BigIntId, Json, Sha256Hex, utcnow


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    chain: Mapped[str] = mapped_column(sa.String(64))  # a model id, or "system"
    seq: Mapped[int]  # 1, 2, ... within the chain
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(sa.String(200))
    action: Mapped[str] = mapped_column(sa.String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(Json)
    prev_hash: Mapped[str] = mapped_column(Sha256Hex)
    hash: Mapped[str] = mapped_column(Sha256Hex)

    __table_args__ = (sa.UniqueConstraint("chain", "seq"),)
