"""Append to and verify the hash-chained audit log.

Each entry's hash is SHA-256 over the canonical JSON of its chain, sequence number, time,
actor, action, payload and the previous entry's hash, so editing, removing or reordering any
entry breaks every later link. Payloads hold ids, counts and hashes, never personal data.
"""

from __future__ import annotations

import hashlib
import json
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from service.db.models import AuditEntry
from service.db.models.base import utcnow
from service.db.repositories.base import Repository

GENESIS_HASH = "0" * 64
SYSTEM_CHAIN = "system"
#: The actor of the entries the service writes on its own (a job, housekeeping), not for a key.
SYSTEM_ACTOR = "system"


def audit_chain(model_id: uuid.UUID) -> str:
    """Each model has its own hash chain in the audit log."""
    return f"model:{model_id}"


def entry_hash(entry: AuditEntry) -> str:
    """SHA-256 of the canonical JSON of everything an entry says, its link included."""
    document = {
        "chain": entry.chain,
        "seq": entry.seq,
        "at": entry.at.isoformat(timespec="microseconds"),
        "actor": entry.actor,
        "action": entry.action,
        "payload": entry.payload,
        "prev_hash": entry.prev_hash,
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class ChainVerification:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str | None = None


class AuditRepository(Repository):
    def append(self, chain: str, *, actor: str, action: str, payload: dict[str, Any]) -> AuditEntry:
        """Add an entry at the end of ``chain``; concurrent appenders are serialised."""
        if self.dialect == "postgresql":
            key = zlib.crc32(chain.encode())
            self.session.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
        last = self.session.execute(
            sa.select(AuditEntry.seq, AuditEntry.hash)
            .where(AuditEntry.chain == chain)
            .order_by(AuditEntry.seq.desc())
            .limit(1)
        ).first()
        seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
        # Round-trip through JSON so the hash covers exactly what the database gives back.
        entry = AuditEntry(
            chain=chain,
            seq=seq,
            at=utcnow(),
            actor=actor,
            action=action,
            payload=json.loads(json.dumps(payload, sort_keys=True)),
            prev_hash=prev_hash,
        )
        entry.hash = entry_hash(entry)
        self.session.add(entry)
        self.session.flush()
        return entry

    def entries(
        self, chain: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[AuditEntry]:
        query = (
            sa.select(AuditEntry)
            .where(AuditEntry.chain == chain, AuditEntry.seq > after_seq)
            .order_by(AuditEntry.seq)
        )
        if limit is not None:
            query = query.limit(limit)
        return list(self.session.scalars(query))

    def of_action(self, chain: str, action: str) -> list[AuditEntry]:
        """The chain's entries of one action, oldest first."""
        query = sa.select(AuditEntry).where(AuditEntry.chain == chain, AuditEntry.action == action)
        return list(self.session.scalars(query.order_by(AuditEntry.seq)))

    def latest(self, chain: str, *, limit: int) -> list[AuditEntry]:
        """The chain's last ``limit`` entries, newest first."""
        query = sa.select(AuditEntry).where(AuditEntry.chain == chain)
        return list(self.session.scalars(query.order_by(AuditEntry.seq.desc()).limit(limit)))

    def verify(self, chain: str) -> ChainVerification:
        """Recompute every link of ``chain`` from the stored rows."""
        prev_hash = GENESIS_HASH
        count = 0
        rows = self.session.execute(
            sa.select(AuditEntry).where(AuditEntry.chain == chain).order_by(AuditEntry.seq)
        ).scalars()
        for expected_seq, entry in enumerate(rows, start=1):
            count += 1
            if entry.seq != expected_seq:
                return ChainVerification(False, count, entry.seq, f"seq {expected_seq} is missing")
            if entry.prev_hash != prev_hash:
                return ChainVerification(False, count, entry.seq, "prev_hash does not link")
            recomputed = entry_hash(entry)
            if recomputed != entry.hash:
                return ChainVerification(False, count, entry.seq, "hash does not match content")
            prev_hash = entry.hash
        return ChainVerification(True, count)
