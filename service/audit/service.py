"""Verify a chain incrementally on every read, and fully on purpose.

A read re-hashes only what the chain's checkpoint does not cover yet (the entries after it, and
the checkpoint's own entry, whose hash must not have changed), then moves the checkpoint to the
last intact entry: its cost is the entries written since the last read, not the history. The
entries a read returns are re-hashed too (a page at most). What lies behind the checkpoint is
re-read only by the full verification (``POST /models/{id}/audit/verify``, ``unlearn audit
verify``, or a housekeeping round every ``UNLEARN_AUDIT_FULL_VERIFY_INTERVAL_S``), whose result
the reads, the status and the dashboard then report.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.orm import Session

from service.audit.schemas import AuditVerification, FullVerification
from service.db.models import AuditCheckpoint, AuditEntry
from service.db.models.base import utcnow
from service.db.repositories import AuditRepository
from service.db.repositories.audit import entry_hash

log = logging.getLogger(__name__)


def _page_break(entries: Sequence[AuditEntry]) -> tuple[int, str] | None:
    """The first of ``entries`` (consecutive, oldest first) that does not hash or link."""
    for entry in entries:
        if entry_hash(entry) != entry.hash:
            return entry.seq, "hash does not match content"
    for before, after in itertools.pairwise(entries):
        if after.seq == before.seq + 1 and after.prev_hash != before.hash:
            return after.seq, "prev_hash does not link"
    return None


def _full(point: AuditCheckpoint) -> FullVerification | None:
    if point.full_at is None or point.full_ok is None:
        return None
    return FullVerification(
        at=point.full_at,
        through_seq=point.full_through_seq or 0,
        ok=point.full_ok,
        first_bad_seq=point.full_first_bad_seq,
        reason=point.full_reason,
    )


def _report(
    point: AuditCheckpoint, *, through_seq: int, found: Sequence[tuple[int, str]]
) -> AuditVerification:
    """What is known about the chain: the checkpoint, the breaks found (by this read, an earlier
    one, the entries returned, the last full verification): the earliest one is reported."""
    breaks = list(found)
    if point.broken_seq is not None:
        breaks.append((point.broken_seq, point.broken_reason or "broken"))
    if point.full_ok is False and point.full_first_bad_seq is not None:
        breaks.append((point.full_first_bad_seq, point.full_reason or "broken"))
    first = min(breaks, default=None)
    return AuditVerification(
        ok=first is None,
        entries=through_seq,
        first_bad_seq=first[0] if first else None,
        reason=first[1] if first else None,
        verified_through_seq=through_seq,
        verified_at=point.verified_at,
        full_verification=_full(point),
    )


def check_chain(
    session: Session, chain: str, *, returned: Sequence[AuditEntry] = ()
) -> AuditVerification:
    """The incremental check of a read: the entries after the checkpoint (and its own link) and
    the ``returned`` ones are re-hashed; the checkpoint advances to the last intact entry, and
    the first break it meets is recorded (it stays until a full verification finds none)."""
    audit = AuditRepository.from_session(session)
    point = audit.checkpoint(chain)
    result = audit.verify_after(chain, point.verified_seq, point.verified_hash)
    through = point.verified_seq
    if result.last_seq > point.verified_seq:
        audit.advance(chain, seq=result.last_seq, hash_=result.last_hash, at=utcnow())
        through = result.last_seq
    found = []
    if not result.ok and result.first_bad_seq is not None:
        reason = result.reason or "broken"
        found.append((result.first_bad_seq, reason))
        if point.broken_seq is None:
            log.error("audit chain %s: broken at seq %s (%s)", chain, result.first_bad_seq, reason)
            point.broken_seq, point.broken_reason = result.first_bad_seq, reason
            session.flush()
    if (page := _page_break(returned)) is not None:
        found.append(page)
    return _report(point, through_seq=through, found=found)


def stored_verification(session: Session, chain: str) -> AuditVerification:
    """What the checkpoint and the last full verification say, re-hashing nothing (status)."""
    point = AuditRepository.from_session(session).checkpoint(chain)
    return _report(point, through_seq=point.verified_seq, found=())


def verify_fully(session: Session, chain: str) -> AuditVerification:
    """Re-hash the whole chain from its first entry and record the result: when, through which
    entry, ok or the first broken link. Its cost grows with the chain: an admin action or a
    housekeeping round, never part of a read."""
    audit = AuditRepository.from_session(session)
    # No row lock while it re-hashes (seconds on a long chain): reads advancing the checkpoint
    # meanwhile must not wait; two full verifications at once both record a correct result.
    point = audit.checkpoint(chain)
    result = audit.verify(chain)
    now = utcnow()
    point.full_at = now
    point.full_ok = result.ok
    point.full_through_seq = result.last_seq if result.ok else result.first_bad_seq
    point.full_first_bad_seq = result.first_bad_seq
    point.full_reason = result.reason
    through = point.verified_seq
    if result.ok:
        if point.broken_seq is not None and point.broken_seq <= result.last_seq:
            point.broken_seq = point.broken_reason = None  # what a read saw is intact now
        audit.advance(chain, seq=result.last_seq, hash_=result.last_hash, at=now)
        through = max(through, result.last_seq)
    else:
        log.error(
            "audit chain %s: full verification broken at seq %s (%s)",
            chain,
            result.first_bad_seq,
            result.reason,
        )
    session.flush()
    return _report(point, through_seq=through, found=())


def verify_due(session: Session, interval_s: float) -> str | None:
    """Fully verify the chain whose last full verification is the oldest, if it is older than
    ``interval_s`` (one chain per housekeeping round, so that a round stays short)."""
    chain = AuditRepository.from_session(session).due_for_full(
        utcnow() - timedelta(seconds=interval_s)
    )
    if chain is not None:
        verify_fully(session, chain)
    return chain
