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

    __table_args__ = (
        sa.UniqueConstraint("chain", "seq"),
        # The entries of one action (exactness audits on a certificate) without a chain scan.
        sa.Index("ix_audit_log_chain_action", "chain", "action"),
    )


class AuditRef(Base):
    """What an entry is about (``deletion:<id>``, ``job:<id>``), written with the entry, so that
    a certificate reads its deletion's entries by index instead of scanning the whole chain."""

    __tablename__ = "audit_refs"

    ref: Mapped[str] = mapped_column(sa.String(80), primary_key=True)
    entry_id: Mapped[int] = mapped_column(BigIntId, sa.ForeignKey("audit_log.id"), primary_key=True)


class AuditCheckpoint(Base):
    """How far a chain is known to be intact, so that a read re-hashes only what came after.

    ``verified_seq``/``verified_hash``: every entry up to this one was checked, link by link, by
    reads (each read checks the entries after it, and this entry's own hash, then advances it).
    ``broken_*``: the first break a read found after it (the checkpoint stops there). ``full_*``:
    the last full verification from the first entry (an admin action or a housekeeping round),
    the only check that re-reads entries behind the checkpoint."""

    __tablename__ = "audit_checkpoints"

    chain: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    verified_seq: Mapped[int] = mapped_column(default=0)
    verified_hash: Mapped[str] = mapped_column(Sha256Hex)
    verified_at: Mapped[datetime | None]
    broken_seq: Mapped[int | None]
    broken_reason: Mapped[str | None] = mapped_column(sa.String(200))
    full_at: Mapped[datetime | None] = mapped_column(index=True)
    full_through_seq: Mapped[int | None]
    full_ok: Mapped[bool | None]
    full_first_bad_seq: Mapped[int | None]
    full_reason: Mapped[str | None] = mapped_column(sa.String(200))
