"""Deletion requests: record, deactivate and schedule in one transaction; retry a failed one.

:func:`request_deletion` does everything the 202 promises before the request commits: the
samples are marked deleted and their payloads and identifiers purged, the touched slices' versions
bumped, every layer that saw them invalidated (the model's ``serving_generation`` moves with
them), the retrains queued through the outbox, and the audit log extended. Flushes, never commits.

This domain sits above the job domains: it asks ``service.approximation`` for the pass and
``service.training.scheduling`` for the retrains, and ``service.jobs.settlement`` completes a
request with nothing to wait for. None of them imports this package: what a finished job means
for its deletions is settlement's. The views of requests are ``views.py``; the certificate and
inclusion proofs ``certificate.py``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from service.approximation.service import (
    ApproximationSettings,
    PassChoice,
    pass_method,
    plan_pass,
    wants_approximation,
)
from service.db.hashing import TenantHasher
from service.db.models import (
    DeletionRequest,
    DeletionStatus,
    ItemOutcome,
    Job,
    Model,
)
from service.db.models.base import utcnow
from service.db.repositories import (
    AuditRepository,
    DeletionRepository,
    LineageRepository,
    ModelRepository,
    SampleRepository,
    TenantRepository,
)
from service.db.repositories.audit import audit_chain
from service.db.repositories.lineage import Deactivation
from service.db.repositories.samples import MarkedSample
from service.deletions.schemas import ClassDeletionCreate, DeletionCounts, DeletionCreate
from service.errors import ConflictError, InvalidInputError
from service.jobs import settlement
from service.models.schemas import MethodName
from service.training import scheduling
from service.webhooks import events
from unlearning.approx.prefix_pass import RequestShape


@dataclass(frozen=True)
class Accepted:
    """A deletion request as the 202 reports it: built from what the transaction wrote, so
    answering reads nothing back; a replayed Idempotency-Key (``created`` False) is read."""

    request: DeletionRequest
    created: bool
    unknown_ids: list[str] = field(default_factory=list)
    job_ids: list[uuid.UUID] = field(default_factory=list)
    invalidated: list[int] = field(default_factory=list)


Item = tuple[str, int | None, ItemOutcome]  # external id, sample id, what the request found


def request_deletion(
    session: Session,
    tenant_id: uuid.UUID,
    body: DeletionCreate,
    *,
    actor: str,
    idempotency_key: str | None = None,
    approximation: ApproximationSettings | None = None,
    retrain: scheduling.RetrainPolicy | None = None,
    shape: RequestShape | None = None,
) -> Accepted:
    """Record and carry out a deletion in one lean transaction; a repeated key is the earlier
    request (``created`` False).

    The model row is locked first, so every read below sees the deletions committed before
    this one and none can commit in between (two requests for one sample: the second finds it
    deleted). Then set-based statements: the samples marked (``UPDATE … RETURNING``), their
    slices' versions and their layers' states moved, the generation bumped; the request, its
    items, jobs, links and outbox messages go in one flush, batched per table.

    Under an approximate policy (the model's ``unlearning_policy``) the payloads are kept for
    the approximate pass, queued here too, until it reads them or the deadline passes; the
    deletion's retrains wait for the pass (at most ``approximation.head_start_s``). ``shape``
    (what the request removes) picks the method of ``auto``; by default samples or a subject."""
    received = utcnow()
    approximation = approximation or ApproximationSettings()
    model = ModelRepository.from_session(session).get_for_update(body.model_id, tenant_id=tenant_id)
    choice = pass_method(model, body.method, body.method_config)  # refused before any write
    canonical = json.dumps(body.canonical(), sort_keys=True, separators=(",", ":"))
    hasher = TenantRepository.from_session(session).hasher(tenant_id)
    if idempotency_key is not None:
        earlier = DeletionRepository.from_session(session).by_key(
            tenant_id, idempotency_key, canonical, hasher
        )
        if earlier is not None:
            return Accepted(earlier, created=False)

    now = utcnow()
    marked, items = _mark_samples(session, model, body, hasher, now)
    approximate = bool(marked) and (
        body.method is not None or wants_approximation(session, model, approximation)
    )
    deactivation = LineageRepository.from_session(session).deactivate(
        model, marked, purge_payloads=not approximate, now=now
    )
    request = _record_request(
        session, model, body, items, deactivation, hasher, received, canonical, idempotency_key
    )
    shape = shape or (RequestShape.subject if body.subject_id else RequestShape.samples)
    jobs = (
        _schedule(
            session,
            model,
            request,
            deactivation,
            choice if approximate else None,
            shape,
            approximation,
            retrain,
        )
        if marked
        else []
    )
    _audit_deactivation(session, model, request, items, deactivation, jobs, hasher, actor=actor)
    events.emit(session, tenant_id, "deletion.deactivated", events.deletion_data(request))
    if not jobs:
        settlement.complete_deletions(session, [request], retrained=False)
    return Accepted(
        request,
        created=True,
        unknown_ids=[external_id for external_id, _, o in items if o is ItemOutcome.unknown],
        job_ids=[j.id for j in jobs],
        invalidated=deactivation.invalidated_layer_ids,
    )


def _mark_samples(
    session: Session, model: Model, body: DeletionCreate, hasher: TenantHasher, now: datetime
) -> tuple[list[MarkedSample], list[Item]]:
    """Mark the named samples (or the subject's) deleted; what the request found of each id:
    deleted now, deleted before, or unknown."""
    samples = SampleRepository.from_session(session)
    if body.sample_ids is not None:
        ids = list(dict.fromkeys(body.sample_ids))
        marked = samples.mark_deleted(model.id, hasher, external_ids=ids, now=now)
    else:
        assert body.subject_id is not None
        marked = samples.mark_deleted(model.id, hasher, subject_id=body.subject_id, now=now)
        ids = [m.external_id for m in marked]
    by_external_id = {m.external_id: m.id for m in marked}
    missing = [i for i in ids if i not in by_external_id]
    deleted_before = samples.deleted_ids(model.id, missing, hasher) if missing else {}
    items: list[Item] = []
    for external_id in ids:
        if external_id in by_external_id:
            items.append((external_id, by_external_id[external_id], ItemOutcome.deleted))
        elif external_id in deleted_before:
            items.append((external_id, deleted_before[external_id], ItemOutcome.already_deleted))
        else:
            items.append((external_id, None, ItemOutcome.unknown))
    return marked, items


def _record_request(
    session: Session,
    model: Model,
    body: DeletionCreate,
    items: list[Item],
    deactivation: Deactivation,
    hasher: TenantHasher,
    received: datetime,
    canonical: str,
    idempotency_key: str | None,
) -> DeletionRequest:
    """The request row, `deactivated`, with its items and the layers it invalidated."""
    deletions = DeletionRepository.from_session(session)
    request = deletions.new(
        tenant_id=model.tenant_id,
        model_id=model.id,
        body=canonical,
        hasher=hasher,
        received_at=received,
        idempotency_key=idempotency_key,
        subject_id=body.subject_id,
    )
    deletions.advance(request, DeletionStatus.deactivated)
    request.serving_generation = model.serving_generation
    if body.subject_id is not None and not deactivation.deleted_sample_ids:
        # Nothing live: deleted by an earlier request, or never known; say which.
        request.partial = not deletions.subject_deleted_before(model.id, body.subject_id, hasher)
    deletions.add_items(request, items, hasher)
    LineageRepository.from_session(session).link_invalidation(
        deactivation.invalidated_layer_ids, request.id
    )
    return request


def _schedule(
    session: Session,
    model: Model,
    request: DeletionRequest,
    deactivation: Deactivation,
    choice: PassChoice | None,
    shape: RequestShape,
    approximation: ApproximationSettings,
    retrain: scheduling.RetrainPolicy | None,
) -> list[Job]:
    """The jobs the request waits for: its approximate pass, when it gets one (planned first:
    its retrains wait for it), and the retrains of the sequences it changed."""
    prefixes = LineageRepository.from_session(session).prefixes(
        model.id, shard_ids=deactivation.shard_ids
    )
    approximate_job = (
        plan_pass(
            session,
            model,
            request,
            deactivation,
            choice,
            shape,
            {p.sequence_id: p for p in prefixes},
            approximation,
        )
        if choice is not None
        else None
    )
    hold = (
        scheduling.hold_for_pass(approximation.head_start_s)
        if approximate_job is not None and approximation.head_start_s > 0
        else None
    )
    jobs = scheduling.retrain_after_deletion(
        session,
        model,
        request,
        set(deactivation.shard_ids),
        set(deactivation.first_invalid_position),
        retrain,
        hold=hold,
        prefixes=prefixes,
    )
    return jobs if approximate_job is None else [*jobs, approximate_job]


def _audit_deactivation(
    session: Session,
    model: Model,
    request: DeletionRequest,
    items: list[Item],
    deactivation: Deactivation,
    jobs: list[Job],
    hasher: TenantHasher,
    *,
    actor: str,
) -> None:
    """The ``deletion.deactivated`` audit entry: counts, a digest of the ids (keyed hashes),
    the invalidated layers and their artifacts, the jobs, the new serving generation."""
    ids = sorted(hasher(external_id) for external_id, _, _ in items)
    AuditRepository.from_session(session).append(
        audit_chain(model.id),
        actor=actor,
        action="deletion.deactivated",
        payload={
            "deletion_id": str(request.id),
            "counts": DeletionCounts.of(request).model_dump(),
            "ids_digest": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
            "hash_scheme": hasher.scheme.value,
            "secret_version": hasher.version,
            "invalidated": [
                {"layer_id": layer.id, "artifact": layer.artifact_ref}
                for layer in deactivation.invalidated
            ],
            "jobs": [str(job.id) for job in jobs],
            "serving_generation": model.serving_generation,
        },
    )


#: The approximate path of a class deletion, unless the request names another method.
CLASS_METHOD: MethodName = "auto"


def request_class_deletion(
    session: Session,
    tenant_id: uuid.UUID,
    model_id: uuid.UUID,
    body: ClassDeletionCreate,
    *,
    actor: str,
    idempotency_key: str | None = None,
    approximation: ApproximationSettings | None = None,
    retrain: scheduling.RetrainPolicy | None = None,
) -> Accepted:
    """Delete every live sample of one class: one deletion request through the normal pipeline,
    with an approximate pass first on the approximate path."""
    model = ModelRepository.from_session(session).get(model_id, tenant_id=tenant_id)
    if model.labels is None:
        raise InvalidInputError("a class deletion needs a classification model")
    if body.label not in model.labels:
        raise InvalidInputError(f"the model has no label {body.label!r}")
    ids = SampleRepository.from_session(session).live_external_ids_of_class(
        model.id, model.labels.index(body.label)
    )
    if not ids:
        raise ConflictError(f"no live sample is labelled {body.label!r}")
    method = body.method or (CLASS_METHOD if body.path == "approximate" else None)
    # Built without validation: a class may hold more samples than one request may name.
    deletion = DeletionCreate.model_construct(
        model_id=model.id,
        sample_ids=ids,
        subject_id=None,
        method=method,
        method_config=body.method_config,
    )
    return request_deletion(
        session,
        tenant_id,
        deletion,
        actor=actor,
        idempotency_key=idempotency_key,
        approximation=approximation,
        retrain=retrain,
        shape=RequestShape.whole_class,
    )


def retry_deletion(
    session: Session, tenant_id: uuid.UUID, deletion_id: uuid.UUID, *, actor: str
) -> DeletionRequest:
    """Bring a failed deletion back: every sequence of its shards that is not exact to the top
    is retrained again (joining a queued job where there is one); with none left, it completes.
    """
    deletions = DeletionRepository.from_session(session)
    request = deletions.get(deletion_id, tenant_id=tenant_id)
    if request.status is not DeletionStatus.failed:
        raise ConflictError(f"only a failed deletion can be retried; this one is {request.status}")
    models = ModelRepository.from_session(session)
    model = models.get_for_update(request.model_id)
    shards = SampleRepository.from_session(session).shards_of(
        deletions.deleted_sample_ids(request.id)
    )
    prefixes = {
        p.sequence_id: p for p in LineageRepository.from_session(session).prefixes(model.id)
    }
    jobs = [
        scheduling.ensure_retrain(session, model, sequence, prefixes[sequence.id].exact)
        for sequence in models.shard_sequences(shards)
        if prefixes[sequence.id].exact < model.n_slices
    ]
    deletions.unlink_failed_jobs(request)
    for job in jobs:
        deletions.link_job(request, job.id)
    deletions.advance(request, DeletionStatus.retraining)
    AuditRepository.from_session(session).append(
        audit_chain(model.id),
        actor=actor,
        action="deletion.retried",
        payload={"deletion_id": str(request.id), "jobs": [str(job.id) for job in jobs]},
    )
    if not jobs:
        settlement.complete_deletions(session, [request], retrained=True)
    return request
