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
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from service.db.models import AuditCheckpoint, AuditEntry, AuditRef
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


def entry_refs(payload: dict[str, Any]) -> set[str]:
    """What an entry is about, as :class:`AuditRef` names: the deletions and the job it names."""
    refs = set()
    if isinstance(deletion := payload.get("deletion_id"), str):
        refs.add(f"deletion:{deletion}")
    for deletion in payload.get("deletion_ids") or ():
        if isinstance(deletion, str):
            refs.add(f"deletion:{deletion}")
    if isinstance(job := payload.get("job_id"), str):
        refs.add(f"job:{job}")
    return refs


@dataclass(frozen=True)
class ChainVerification:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str | None = None
    #: The last entry found intact (0 if none) and its hash: where a checkpoint may advance to.
    last_seq: int = 0
    last_hash: str = GENESIS_HASH


def _walk(
    rows: Iterable[AuditEntry], *, seq: int, prev_hash: str, counted: int = 0
) -> ChainVerification:
    """Check ``rows`` (ordered by seq) as the continuation of a chain whose entry ``seq`` has the
    hash ``prev_hash``: each row must be the next seq, link to the one before and hash to what it
    stores."""
    count = counted
    for entry in rows:
        count += 1
        expected = seq + 1
        if entry.seq != expected:
            return ChainVerification(
                False, count, entry.seq, f"seq {expected} is missing", seq, prev_hash
            )
        if entry.prev_hash != prev_hash:
            return ChainVerification(
                False, count, entry.seq, "prev_hash does not link", seq, prev_hash
            )
        if entry_hash(entry) != entry.hash:
            return ChainVerification(
                False, count, entry.seq, "hash does not match content", seq, prev_hash
            )
        seq, prev_hash = entry.seq, entry.hash
    return ChainVerification(True, count, last_seq=seq, last_hash=prev_hash)


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
        if seq == 1:  # the chain's checkpoint comes with it (unless a read made it already)
            self.checkpoint(chain)
        for ref in sorted(entry_refs(entry.payload)):
            self.session.add(AuditRef(ref=ref, entry_id=entry.id))
        return entry

    def about(self, chain: str, refs: Iterable[str]) -> list[AuditEntry]:
        """The chain's entries that name any of ``refs`` (:func:`entry_refs`), oldest first: an
        index look-up, whatever the length of the chain."""
        names = sorted(set(refs))
        if not names:
            return []
        # Two look-ups, so that each planner takes an index: the refs' key, then the entries'.
        ids = list(
            self.session.scalars(sa.select(AuditRef.entry_id).where(AuditRef.ref.in_(names)))
        )
        if not ids:
            return []
        query = sa.select(AuditEntry).where(AuditEntry.id.in_(ids))
        found = [e for e in self.session.scalars(query) if e.chain == chain]
        return sorted(found, key=lambda e: e.seq)

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
        """The chain's entries of one action, oldest first, by the index on (chain, action).
        Sorted here: with an ORDER BY seq, SQLite's planner walks the (chain, seq) index and
        filters the whole chain instead."""
        query = sa.select(AuditEntry).where(AuditEntry.chain == chain, AuditEntry.action == action)
        return sorted(self.session.scalars(query), key=lambda e: e.seq)

    def latest(self, chain: str, *, limit: int) -> list[AuditEntry]:
        """The chain's last ``limit`` entries, newest first."""
        query = sa.select(AuditEntry).where(AuditEntry.chain == chain)
        return list(self.session.scalars(query.order_by(AuditEntry.seq.desc()).limit(limit)))

    def verify(self, chain: str) -> ChainVerification:
        """Recompute every link of ``chain`` from the stored rows: the full verification, whose
        cost grows with the chain (an admin action or a housekeeping round, never a read)."""
        rows = self.session.execute(
            sa.select(AuditEntry)
            .where(AuditEntry.chain == chain)
            .order_by(AuditEntry.seq)
            .execution_options(yield_per=2000)
        ).scalars()
        return _walk(rows, seq=0, prev_hash=GENESIS_HASH)

    def verify_after(self, chain: str, seq: int, hash_: str) -> ChainVerification:
        """Check the entries after the checkpoint (``seq``, ``hash_``) and the checkpoint's own
        link: entry ``seq`` must still hash to ``hash_``. Costs the entries since the checkpoint,
        not the chain; ``entries`` counts the entries re-hashed."""
        query = sa.select(AuditEntry).where(AuditEntry.chain == chain)
        if seq == 0:
            return _walk(
                self.session.scalars(query.order_by(AuditEntry.seq)), seq=0, prev_hash=hash_
            )
        rows = iter(
            self.session.scalars(query.where(AuditEntry.seq >= seq).order_by(AuditEntry.seq))
        )
        anchor = next(rows, None)
        if anchor is None or anchor.seq != seq:
            return ChainVerification(False, 0, seq, "the checkpoint's entry is missing", 0, hash_)
        if anchor.hash != hash_ or entry_hash(anchor) != hash_:
            return ChainVerification(
                False, 1, seq, "the checkpoint's entry changed", seq - 1, anchor.prev_hash
            )
        return _walk(rows, seq=seq, prev_hash=hash_, counted=1)

    def checkpoint(self, chain: str) -> AuditCheckpoint:
        """The chain's checkpoint, made at the first entry (or here, for chains made before)."""
        query = sa.select(AuditCheckpoint).where(AuditCheckpoint.chain == chain)
        found = self.session.scalars(query).first()
        if found is not None:
            return found
        try:
            with self.session.begin_nested():
                self.session.add(AuditCheckpoint(chain=chain, verified_hash=GENESIS_HASH))
        except IntegrityError:  # made by a concurrent read
            pass
        return self.session.scalars(query).one()

    def advance(self, chain: str, *, seq: int, hash_: str, at: datetime) -> None:
        """Move the checkpoint forward to ``seq`` (never back: a concurrent read may be ahead)."""
        self.session.execute(
            sa.update(AuditCheckpoint)
            .where(AuditCheckpoint.chain == chain, AuditCheckpoint.verified_seq < seq)
            .values(verified_seq=seq, verified_hash=hash_, verified_at=at)
            .execution_options(synchronize_session=False)
        )

    def chains(self) -> list[str]:
        """Every chain that has a checkpoint (every chain with an entry)."""
        return list(self.session.scalars(sa.select(AuditCheckpoint.chain).order_by("chain")))

    def due_for_full(self, before: datetime) -> str | None:
        """The chain whose last full verification is oldest and before ``before`` (never first)."""
        query = (
            sa.select(AuditCheckpoint.chain)
            .where(sa.or_(AuditCheckpoint.full_at.is_(None), AuditCheckpoint.full_at < before))
            .order_by(AuditCheckpoint.full_at.is_not(None), AuditCheckpoint.full_at)
            .limit(1)
        )
        return self.session.scalars(query).first()
