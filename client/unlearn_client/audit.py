"""Check a model's audit log on the caller's side, without trusting the service's own check.

Each entry's ``hash`` is SHA-256 over the canonical JSON (sorted keys, no spaces, UTF-8) of
``chain``, ``seq``, ``at`` (ISO 8601 in UTC with microseconds), ``actor``, ``action``,
``payload`` and ``prev_hash``, the previous entry's hash (64 zeros for the first). Recomputing
every link shows an entry edited, removed or reordered; keeping the last ``(seq, hash)`` you
checked (``ChainCheck.head``) and passing it as ``pinned`` next time shows that the history
before it was not rewritten, only appended to.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from unlearn_client.models import AuditEntry

GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class ChainCheck:
    """``ok`` when every link holds; else the first entry that breaks it and why."""

    ok: bool
    entries: int
    head: tuple[int, str] | None  # (seq, hash) of the last entry checked: pin it
    first_bad_seq: int | None = None
    reason: str | None = None


def entry_hash(chain: str, entry: AuditEntry) -> str:
    """The hash the entry must carry, recomputed from what it says."""
    at = datetime.fromisoformat(entry["at"]).astimezone(UTC)
    document = {
        "chain": chain,
        "seq": entry["seq"],
        "at": at.isoformat(timespec="microseconds"),
        "actor": entry["actor"],
        "action": entry["action"],
        "payload": entry["payload"],
        "prev_hash": entry["prev_hash"],
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def verify_audit_chain(
    chain: str, entries: Iterable[AuditEntry], *, pinned: tuple[int, str] | None = None
) -> ChainCheck:
    """Recompute every link of a whole chain (its entries from ``seq`` 1, in order); with
    ``pinned`` (a ``(seq, hash)`` from an earlier check) that entry must still be there,
    unchanged."""
    prev_hash = GENESIS_HASH
    count = 0
    head: tuple[int, str] | None = None

    def broken(seq: int, reason: str) -> ChainCheck:
        return ChainCheck(False, count, head, seq, reason)

    for expected_seq, entry in enumerate(entries, start=1):
        count += 1
        seq = entry["seq"]
        if seq != expected_seq:
            return broken(seq, f"seq {expected_seq} is missing")
        if entry["prev_hash"] != prev_hash:
            return broken(seq, "prev_hash does not link")
        if entry_hash(chain, entry) != entry["hash"]:
            return broken(seq, "hash does not match content")
        if pinned is not None and seq == pinned[0] and entry["hash"] != pinned[1]:
            return broken(seq, "the pinned entry changed")
        prev_hash = entry["hash"]
        head = (seq, prev_hash)
    if pinned is not None and count < pinned[0]:
        return ChainCheck(False, count, head, pinned[0], "the pinned entry is gone")
    return ChainCheck(True, count, head)
