"""Requesting exactness audits and reading their results. Flushes, never commits.

An audit is a job (kind ``exactness_audit``) on the model's `training` queue; its per-layer
result is an ``exactness.audited`` entry of the model's hash-chained audit log (the record),
summed up in the job's ``params`` (for lists).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime

from sqlalchemy.orm import Session

from service.db.models import DeletionRequest, DeletionStatus, Job, JobKind, ModelStatus
from service.db.models.job_params import AuditParams
from service.db.repositories import (
    AuditRepository,
    DeletionRepository,
    JobRepository,
    ModelRepository,
    SampleRepository,
)
from service.db.repositories.audit import audit_chain
from service.errors import ConflictError, InvalidInputError, JobNotFoundError
from service.exactness.runner import AUDITED, REQUESTED
from service.exactness.schemas import ExactnessAuditLink, ExactnessAuditPublic, LayerCheck
from service.training import scheduling


def request_audit(
    session: Session,
    tenant_id: uuid.UUID,
    model_id: uuid.UUID,
    shards: list[int] | None,
    *,
    actor: str,
) -> Job:
    """Queue an audit of these shards (all when None); an identical audit still queued or
    running is returned instead of a second one."""
    models = ModelRepository.from_session(session)
    model = models.get(model_id, tenant_id=tenant_id)
    if model.status is not ModelStatus.ready:
        raise ConflictError(
            f"model {model.id} is {model.status.value}: only a trained model can be audited"
        )
    chosen = sorted(set(range(model.n_shards) if shards is None else shards))
    unknown = [i for i in chosen if i >= model.n_shards]
    if unknown:
        raise InvalidInputError(
            f"the model has no shard {unknown[0]}: its shards are 0..{model.n_shards - 1}"
        )
    shard_ids = _shard_ids(session, model.id, chosen)
    n_sequences = sum(1 for s in models.sequences(model.id) if s.shard_id in shard_ids)
    digest = hashlib.sha256(",".join(map(str, chosen)).encode()).hexdigest()[:16]
    job, created = JobRepository.from_session(session).create(
        model_id=model.id,
        kind=JobKind.exactness_audit,
        stages_total=n_sequences * model.n_slices,
        params=AuditParams(shards=chosen).dump(),
        dedup_key=f"exactness-audit:{model.id}:{digest}",
    )
    if created:
        scheduling.enqueue(session, job)
        AuditRepository.from_session(session).append(
            audit_chain(model.id),
            actor=actor,
            action=REQUESTED,
            payload={"job_id": str(job.id), "shards": chosen},
        )
    return job


def get_audit(
    session: Session, tenant_id: uuid.UUID, model_id: uuid.UUID, audit_id: uuid.UUID
) -> ExactnessAuditPublic:
    """An audit of the tenant's model (another tenant's, or another kind of job: 404)."""
    ModelRepository.from_session(session).get(model_id, tenant_id=tenant_id)
    job = JobRepository.from_session(session).get(audit_id, tenant_id=tenant_id)
    if job.model_id != model_id or job.kind is not JobKind.exactness_audit:
        raise JobNotFoundError(f"no exactness audit {audit_id} of model {model_id}")
    return describe(session, job)


def latest_audits(
    session: Session, tenant_id: uuid.UUID, model_id: uuid.UUID, *, limit: int
) -> list[ExactnessAuditPublic]:
    """The model's audits, newest first, without their per-layer results."""
    model = ModelRepository.from_session(session).get(model_id, tenant_id=tenant_id)
    jobs = JobRepository.from_session(session).latest_of_kind(
        model.id, JobKind.exactness_audit, limit=limit
    )
    return [describe(session, job, with_layers=False) for job in jobs]


def describe(session: Session, job: Job, *, with_layers: bool = True) -> ExactnessAuditPublic:
    """An audit job as the API shows it; its layers are read from its audit-log entry."""
    params = AuditParams.of(job)
    layers: list[LayerCheck] = []
    if with_layers and params.audit_seq is not None:
        chain = audit_chain(job.model_id)
        entries = AuditRepository.from_session(session).of_action(chain, AUDITED)
        mine = [e for e in entries if e.payload.get("job_id") == str(job.id)]
        layers = [LayerCheck(**layer) for e in mine for layer in e.payload["layers"]]
    return ExactnessAuditPublic(
        id=job.id,
        model_id=job.model_id,
        base_model=params.base_model,
        base_model_sha256=params.base_model_sha256,
        status=job.status.value,
        result=params.result,
        shards=params.shards,
        layers_checked=params.layers_checked,
        layers_skipped=params.layers_skipped,
        mismatched=params.mismatched,
        note=job.error,
        layers=layers,
        audit_seq=params.audit_seq,
        job_url=f"/jobs/{job.id}",
        audit_url=f"/models/{job.model_id}/exactness-audits/{job.id}",
        requested_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def certified_audits(session: Session, request: DeletionRequest) -> list[ExactnessAuditLink]:
    """The audits that, after a deletion completed, compared layers serving its shards with a
    retrain from scratch: what its certificate shows."""
    if request.status is not DeletionStatus.completed or request.completed_at is None:
        return []
    completed_at: datetime = request.completed_at
    sample_ids = DeletionRepository.from_session(session).deleted_sample_ids(request.id)
    shard_ids = SampleRepository.from_session(session).shards_of(sample_ids)
    indexes = {
        shard.index
        for shard in ModelRepository.from_session(session).shards(request.model_id)
        if shard.id in shard_ids
    }
    links = []
    chain = audit_chain(request.model_id)
    for entry in AuditRepository.from_session(session).of_action(chain, AUDITED):
        if entry.at < completed_at:
            continue
        mine = [
            layer
            for layer in entry.payload["layers"]
            if layer["shard"] in indexes and layer.get("match") is not None
        ]
        if mine:
            links.append(
                ExactnessAuditLink(
                    job_id=uuid.UUID(entry.payload["job_id"]),
                    at=entry.at,
                    result=entry.payload["result"],
                    layers_checked=len(mine),
                    mismatched=[layer["layer_id"] for layer in mine if not layer["match"]],
                    audit_seq=entry.seq,
                    audit_hash=entry.hash,
                    base_model_sha256=entry.payload.get("base_model_sha256"),
                )
            )
    return links


def _shard_ids(session: Session, model_id: uuid.UUID, indexes: list[int]) -> set[uuid.UUID]:
    wanted = set(indexes)
    shards = ModelRepository.from_session(session).shards(model_id)
    return {shard.id for shard in shards if shard.index in wanted}
