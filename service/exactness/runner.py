"""Running one exactness audit: the body of the audit task, on the model's `training` queue.

1. Start (one transaction, job locked): a finished job is a redelivered message and changes
   nothing. Otherwise, for each sequence of the chosen shards that serves an exact layer, what a
   full retrain would read (:func:`~service.training.service.read_sequence_job` from stage 1:
   the slice order, the model's settings and seeds, today's live samples); the active layers;
   and, read last, the slices' versions: a layer whose slices lost a sample while the data was
   read is skipped, not compared with data it was not trained on.
2. Retrain those sequences from stage 1, outside any transaction, through the training code
   path (``S3TEngine.retrain``) into a scratch store, a temporary folder deleted afterwards;
   each stage is recorded as progress. Then read the bytes the real store holds now under each
   layer's reference. Nothing is written to the real store or to the lineage.
3. Record (one transaction): per layer, the recomputed reference against the recorded one and
   against the stored bytes' (approximate layers are skipped: they are expected to differ), as
   an ``exactness.audited`` entry of the model's audit chain; the job succeeds with the result
   in its note. A mismatch is the audit's finding, never the job's failure: a failed job means
   the audit could not run.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from service.db.models import Job, JobStatus, LayerState
from service.db.models.job_params import AuditParams
from service.db.repositories import (
    AuditRepository,
    JobRepository,
    LineageRepository,
    ModelRepository,
)
from service.db.repositories.audit import SYSTEM_ACTOR, audit_chain
from service.db.repositories.jobs import LIVE_STATUSES
from service.engine import BaseModelKey, Engines, engine_for
from service.exactness.schemas import AuditResult, LayerCheck
from service.jobs.runner import Transaction, claim_job, failure_recorded
from service.training.service import SequenceJob, read_sequence_job
from service.webhooks import events
from unlearning.artifacts import LocalArtifactStore, stored_ref
from unlearning.s3t import S3TEngine

#: The audit-log actions of an audit: requested (by a key), and its per-layer result.
REQUESTED = "exactness.requested"
AUDITED = "exactness.audited"
APPROXIMATE = "approximate"
CHANGED = "changed during the audit"

Stage = tuple[int, int, int]  # (shard, sequence, position)


@dataclass(frozen=True)
class AuditedLayer:
    layer_id: int
    shard: int
    sequence: int
    position: int
    artifact: str | None
    approximate: bool
    current: bool  # its recorded slice versions are those read after the data

    @property
    def stage(self) -> Stage:
        return (self.shard, self.sequence, self.position)


@dataclass(frozen=True)
class AuditWork:
    model_id: uuid.UUID
    shards: list[int]
    sequences: list[SequenceJob]  # the sequences with an exact layer to compare
    layers: list[AuditedLayer]
    base: BaseModelKey  # the base model retrained on: its digest was checked when loaded


@dataclass(frozen=True)
class AuditReport:
    result: AuditResult
    layers: list[LayerCheck]

    @property
    def checked(self) -> list[LayerCheck]:
        return [layer for layer in self.layers if layer.match is not None]

    @property
    def mismatched(self) -> list[LayerCheck]:
        return [layer for layer in self.checked if not layer.match]

    def note(self) -> str:
        skipped = len(self.layers) - len(self.checked)
        tail = f"; {skipped} skipped" if skipped else ""
        if self.result == "inconclusive":
            return f"exactness audit inconclusive: no active exact layer to compare{tail}"
        if self.result == "passed":
            n = len(self.checked)
            return f"exactness audit passed: {n} layer(s) bitwise equal to a retrain{tail}"
        wrong = ", ".join(
            f"layer {c.layer_id} (shard {c.shard}, sequence {c.sequence}, stage {c.position}: "
            f"{c.problem})"
            for c in self.mismatched
        )
        return (
            f"exactness audit FAILED: {len(self.mismatched)} of {len(self.checked)} layer(s) "
            f"differ: {wrong}{tail}"
        )

    def payload(self, job_id: uuid.UUID, shards: list[int], base: BaseModelKey) -> dict[str, Any]:
        """The ``exactness.audited`` entry: ids and digests only (the base model's too: the
        retrain is bitwise equal only on the same frozen weights)."""
        return {
            "job_id": str(job_id),
            "shards": shards,
            "base_model": base.name,
            "base_model_sha256": base.sha256,
            "result": self.result,
            "layers_checked": len(self.checked),
            "layers_skipped": len(self.layers) - len(self.checked),
            "mismatched": [c.layer_id for c in self.mismatched],
            "layers": [c.model_dump(exclude_none=True) for c in self.layers],
        }


def run_exactness_audit(
    transaction: Transaction, engines: Engines, job_id: uuid.UUID
) -> AuditReport | None:
    """Retrain the job's shards into a scratch store and record the comparison; None when the
    job had already finished (a redelivered message changes nothing). The audit changes no
    lineage: a failure locks the job alone."""
    with failure_recorded(transaction, job_id, lock_model=False, on_failure=_finished):
        with transaction() as session:
            work = _start(session, job_id)
            if work is None:
                return None
        engine = engine_for(engines, work.base)
        recomputed = _retrain(transaction, engine, work, job_id)
        stored = {
            layer.layer_id: stored_ref(engine.store, layer.artifact)
            for layer in work.layers
            if layer.artifact is not None and not layer.approximate and layer.current
        }
        with transaction() as session:
            return _record(session, job_id, work, recomputed, stored)


def compare(
    layer: AuditedLayer, recomputed: str | None, stored: str | None, *, active: bool
) -> LayerCheck:
    """One layer's verdict: the retrain's reference against the recorded one and against the
    bytes stored; skipped when approximate, or when it changed while the audit ran."""
    check = LayerCheck(
        layer_id=layer.layer_id,
        shard=layer.shard,
        sequence=layer.sequence,
        position=layer.position,
        artifact=layer.artifact,
    )
    if layer.approximate:
        return check.model_copy(update={"skipped": APPROXIMATE})
    if not (layer.current and active):
        return check.model_copy(update={"skipped": CHANGED})
    problems = []
    if recomputed != layer.artifact:
        problems.append("a retrain from scratch gives other weights than the recorded artifact")
    if stored is None:
        problems.append("the recorded artifact is missing from the store")
    elif stored != layer.artifact:
        problems.append("the stored bytes are not the recorded artifact")
    return check.model_copy(
        update={
            "recomputed": recomputed,
            "stored_digest": stored,
            "match": not problems,
            "problem": "; ".join(problems) or None,
        }
    )


def report(checks: list[LayerCheck]) -> AuditReport:
    compared = [c for c in checks if c.match is not None]
    result: AuditResult = (
        "inconclusive" if not compared else "passed" if all(c.match for c in compared) else "failed"
    )
    return AuditReport(result, checks)


def _start(session: Session, job_id: uuid.UUID) -> AuditWork | None:
    job = claim_job(session, job_id)
    if job is None:
        return None
    work = read_audit(session, job)
    job.stages_total = sum(s.spec.config.n_slices for s in work.sequences)
    job.stages_done = 0
    return work


def read_audit(session: Session, job: Job) -> AuditWork:
    """What the audit compares, and the data to retrain it from (see the module's docstring)."""
    models = ModelRepository.from_session(session)
    lineage = LineageRepository.from_session(session)
    shards = AuditParams.of(job).shards
    shard_index = {shard.id: shard.index for shard in models.shards(job.model_id)}
    sequences = {
        s.id: s for s in models.sequences(job.model_id) if shard_index[s.shard_id] in shards
    }
    active = lineage.active_layers(list(sequences))
    to_train = {layer.sequence_id for layer in active if not layer.approximate}
    data = [read_sequence_job(session, sequence_id, 1) for sequence_id in sorted(to_train)]
    recorded = lineage.recorded_versions(layer.id for layer in active)
    now = lineage.snapshot(sid for versions in recorded.values() for sid in versions)
    layers = [
        AuditedLayer(
            layer_id=layer.id,
            shard=shard_index[sequences[layer.sequence_id].shard_id],
            sequence=sequences[layer.sequence_id].index,
            position=layer.position,
            artifact=layer.artifact_ref,
            approximate=layer.approximate,
            current=all(now.get(sid) == v for sid, v in recorded.get(layer.id, {}).items()),
        )
        for layer in active
    ]
    layers.sort(key=lambda layer: layer.stage)
    data.sort(key=lambda work: work.key)
    base = BaseModelKey.of(models.get(job.model_id).base_model)
    return AuditWork(job.model_id, shards, data, layers, base)


def _retrain(
    transaction: Transaction, engine: S3TEngine, work: AuditWork, job_id: uuid.UUID
) -> dict[Stage, str]:
    """Every stage of the work's sequences, trained from scratch into a scratch store that is
    gone afterwards: stage -> reference of its bytes."""
    recomputed: dict[Stage, str] = {}
    with tempfile.TemporaryDirectory(prefix="exactness-audit-") as scratch:
        scratch_engine = engine.with_store(LocalArtifactStore(scratch))
        for sequence in work.sequences:
            trained = scratch_engine.retrain(
                sequence.spec,
                sequence.key,
                1,
                sequence.samples,
                [],
                on_stage=_progress(transaction, job_id, len(recomputed)),
            )
            recomputed.update({(t.shard, t.sequence, t.stage): t.artifact for t in trained})
    return recomputed


def _progress(transaction: Transaction, job_id: uuid.UUID, done: int) -> Callable[[int], None]:
    def progress(stage: int) -> None:
        with transaction() as session:
            jobs = JobRepository.from_session(session)
            jobs.progress(jobs.get(job_id), done + stage)

    return progress


def _record(
    session: Session,
    job_id: uuid.UUID,
    work: AuditWork,
    recomputed: dict[Stage, str],
    stored: dict[int, str | None],
) -> AuditReport | None:
    jobs = JobRepository.from_session(session)
    job = jobs.get_for_update(job_id)
    if job.status not in LIVE_STATUSES:  # another delivery finished it meanwhile
        return None
    states = LineageRepository.from_session(session).by_ids(layer.layer_id for layer in work.layers)
    still_active = {i for i, layer in states.items() if layer.state is LayerState.active}
    result = report(
        [
            compare(
                layer,
                recomputed.get(layer.stage),
                stored.get(layer.layer_id),
                active=layer.layer_id in still_active,
            )
            for layer in work.layers
        ]
    )
    entry = AuditRepository.from_session(session).append(
        audit_chain(work.model_id),
        actor=SYSTEM_ACTOR,
        action=AUDITED,
        payload=result.payload(job.id, work.shards, work.base),
    )
    job.params = AuditParams(
        shards=work.shards,
        result=result.result,
        layers_checked=len(result.checked),
        layers_skipped=len(result.layers) - len(result.checked),
        mismatched=[c.layer_id for c in result.mismatched],
        audit_seq=entry.seq,
        base_model=work.base.name,
        base_model_sha256=work.base.sha256,
    ).dump()
    jobs.progress(job, job.stages_total)
    jobs.finish(job, JobStatus.succeeded, result.note())
    _finished(session, job)
    return result


def _finished(session: Session, job: Job) -> None:
    """The audit ended (succeeded, or failed and recorded by ``failure_recorded``)."""
    tenant_id = ModelRepository.from_session(session).get(job.model_id).tenant_id
    events.emit(session, tenant_id, "exactness_audit.finished", events.audit_data(job))
