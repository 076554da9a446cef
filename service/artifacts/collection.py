"""Artifact collection: delete from the store every artifact no live row names any more.

Once a layer is invalidated, superseded or discarded (or a finished job left it in
``training``), and a chain's pass statistics are stale, their artifacts hold weights that may
have learned from deleted samples: they are deleted from the store as soon as no live row names
the same reference (``service.db.repositories.artifacts`` says which rows are live; references
are counted by artifact across every layer of every model, so equal bytes that a live layer
uses are never deleted).

The database decides, and a crash at any point loses nothing valid and leaves nothing forever:

- A batch runs in one transaction holding the collection lock exclusively
  (:meth:`ArtifactRepository.lock`). It reads what is unreferenced, deletes those files, then
  records them in ``collected_artifacts`` (with an ``artifacts.collected`` audit entry per
  model) and deletes the stale statistics rows, and commits. A crash or a failed commit after
  some files went leaves their dead rows unmarked, so the next pass finds them again (deleting
  an absent file is a no-op) and records them; a file whose deletion fails stays unmarked (its
  statistics row too) and is retried by the next pass.
- Writers record new references through :func:`claim`, first thing in their transaction: it
  shares the lock and checks that the files exist. A writer whose ``put`` found equal bytes
  already stored (a no-op) and a collector deleting them meanwhile are thereby ordered: either
  the collector sees the writer's row (committed first) and keeps the file, or the writer sees
  the file gone and raises :class:`~unlearning.artifacts.ArtifactNotFoundError` before it names
  it (the caller writes the bytes again). Claiming also forgets a collected mark: those bytes
  are stored again.

Files no row names at all (a job wrote them, then crashed before recording them) are swept by
:func:`sweep`: those stored before a grace period (``UNLEARN_ARTIFACT_SWEEP_GRACE_S``, longer
than a job runs, so that a running job's fresh files stay) are deleted under the same lock, after
the unfinished writes the store holds. A job that still meant to record one finds it gone when it
claims it and trains again, as above.

Collection runs in every API process's housekeeping and, at once, in a worker after each job
(activations supersede and discard layers; a completing deletion leaves its layers dead).
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from service.db.models import LayerStatistics
from service.db.models.base import utcnow
from service.db.repositories import ArtifactRepository, AuditRepository, StatisticsRepository
from service.db.repositories.audit import SYSTEM_ACTOR, audit_chain
from unlearning.artifacts import ArtifactNotFoundError, ArtifactStore

log = logging.getLogger(__name__)
Transaction = Callable[[], AbstractContextManager[Session]]
BATCH = 100


@dataclass(frozen=True)
class Batch:
    deleted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # the store refused: retried next pass
    full: bool = False  # limited by the batch size: more may be waiting


def collect(transaction: Transaction, store: ArtifactStore, *, batch: int = BATCH) -> list[str]:
    """Collect batch after batch (each its own transaction) until nothing is left; returns the
    references deleted from the store."""
    deleted: list[str] = []
    while True:
        with transaction() as session:
            done = collect_batch(session, store, limit=batch)
        deleted += done.deleted
        if not done.full or not done.deleted:
            return deleted


def collect_batch(session: Session, store: ArtifactStore, *, limit: int = BATCH) -> Batch:
    """Delete up to ``limit`` unreferenced artifacts (and up to ``limit`` stale statistics) from
    the store and record them; the caller commits (see the module docstring for the order)."""
    artifacts = ArtifactRepository.from_session(session)
    artifacts.lock(exclusive=True)
    pinned = artifacts.pinned_layer_ids()
    statistics = StatisticsRepository.from_session(session)
    stale = statistics.stale(pinned, limit=limit)
    stale_refs = {row.artifact_ref for row in stale}
    still_named = artifacts.live_among(stale_refs, pinned, besides=[r.layer_id for r in stale])
    layer_refs = artifacts.unreferenced(pinned, limit=limit)
    deleted: list[str] = []
    failed: list[str] = []
    for ref in sorted(set(layer_refs) | (stale_refs - still_named)):
        try:
            store.delete(ref)
        except Exception:  # any backend's error: the ref stays unmarked and is retried
            log.exception("artifact %s not deleted; the next collection retries it", ref)
            failed.append(ref)
        else:
            deleted.append(ref)
    statistics.forget(row for row in stale if row.artifact_ref not in failed)
    if deleted:
        already = artifacts.collected_at(deleted)
        artifacts.mark_collected(ref for ref in deleted if ref not in already)
        _audit(session, deleted, [row for row in stale if row.artifact_ref in deleted])
    return Batch(deleted, failed, full=len(layer_refs) >= limit or len(stale) >= limit)


def sweep(
    transaction: Transaction, store: ArtifactStore, *, grace_s: float, batch: int = BATCH
) -> list[str]:
    """Delete the artifacts stored more than ``grace_s`` ago that no row names (and unfinished
    writes as old), a batch per transaction holding the collection lock; returns the references
    deleted. The database never knew them: the log says what went."""
    cutoff = utcnow() - timedelta(seconds=grace_s)
    partial = store.delete_partial(cutoff)
    if partial:
        log.info("swept %d unfinished artifact writes", partial)
    old = list(store.stored_before(cutoff))
    deleted: list[str] = []
    for start in range(0, len(old), batch):
        refs = old[start : start + batch]
        with transaction() as session:
            artifacts = ArtifactRepository.from_session(session)
            artifacts.lock(exclusive=True)
            named = artifacts.named_among(refs)
            for ref in refs:
                if ref in named:
                    continue
                try:
                    store.delete(ref)
                except Exception:  # any backend's error: the next sweep tries again
                    log.exception("unrecorded artifact %s not deleted", ref)
                else:
                    deleted.append(ref)
    if deleted:
        log.info("swept %d artifacts no row named: %s", len(deleted), ", ".join(deleted))
    return deleted


def claim(session: Session, store: ArtifactStore, refs: Iterable[str]) -> None:
    """Call first in a transaction that records rows naming ``refs``: orders it against the
    collector, raises ArtifactNotFoundError when one of them is no longer stored, and forgets
    that any of them was collected."""
    wanted = sorted(set(refs))
    artifacts = ArtifactRepository.from_session(session)
    artifacts.lock(exclusive=False)
    for ref in wanted:
        if not store.exists(ref):
            raise ArtifactNotFoundError(ref)
    artifacts.uncollect(wanted)


def collected_among(session: Session, refs: Iterable[str]) -> set[str]:
    """Of these artifacts, those deleted from the store (to drop from memory)."""
    return set(ArtifactRepository.from_session(session).collected_at(refs))


def _audit(session: Session, deleted: list[str], statistics: list[LayerStatistics]) -> None:
    """One ``artifacts.collected`` entry per model whose rows named a deleted artifact: the
    artifacts, the layers (or the chains whose statistics they were) and the deletions
    concerned."""
    artifacts = ArtifactRepository.from_session(session)
    layers: dict[uuid.UUID, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    chains: dict[uuid.UUID, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    named: set[int] = set()
    for ref, layer_id, model_id in artifacts.holders(deleted):
        layers[model_id][ref].append(layer_id)
        named.add(layer_id)
    owners = artifacts.models_of(row.layer_id for row in statistics)
    for row in statistics:
        chains[owners[row.layer_id]][row.artifact_ref].append(row.layer_id)
        named.add(row.layer_id)
    concerned = artifacts.deletions_of(named)
    audit = AuditRepository.from_session(session)
    for model_id in sorted({*layers, *chains}):
        refs = sorted({*layers[model_id], *chains[model_id]})
        items: list[dict[str, Any]] = [
            {
                "artifact": ref,
                "layer_ids": layers[model_id].get(ref, []),
                "statistics_of": chains[model_id].get(ref, []),
            }
            for ref in refs
        ]
        ids = {i for item in items for i in (*item["layer_ids"], *item["statistics_of"])}
        deletions = sorted({str(d) for i in ids for d in concerned.get(i, ())})
        audit.append(
            audit_chain(model_id),
            actor=SYSTEM_ACTOR,
            action="artifacts.collected",
            payload={"collected": items, "deletion_ids": deletions},
        )
