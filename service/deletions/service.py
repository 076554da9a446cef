"""Deletion requests: record, deactivate and schedule in one transaction; report and certify.

:func:`request_deletion` does everything the 202 promises before the request commits: the
samples are marked deleted and their payloads and identifiers purged, the touched slices' versions
bumped, every layer that saw them invalidated (the model's ``serving_generation`` moves with
them), the retrains queued through the outbox, and the audit log extended. Flushes, never commits.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from service.approximation.service import (
    ApproximationSettings,
    keep_payloads,
    pass_method,
    plan_pass,
    wants_approximation,
)
from service.audit.service import check_chain
from service.base_models.schemas import BaseModelRef
from service.db.models import (
    DeletionRequest,
    DeletionStatus,
    ItemOutcome,
    Job,
    LayerState,
)
from service.db.models.base import utcnow
from service.db.repositories import (
    ArtifactRepository,
    AuditRepository,
    DeletionRepository,
    LineageRepository,
    ModelRepository,
    SampleRepository,
    TenantRepository,
)
from service.db.repositories.audit import audit_chain
from service.deletions import lifecycle
from service.deletions.schemas import (
    ApproximateLayer,
    AuditLink,
    CertifiedLayer,
    ClassDeletionCreate,
    DeletionCertificate,
    DeletionCounts,
    DeletionCreate,
    DeletionPage,
    DeletionPublic,
    DeletionVerification,
    DeletionVerify,
    SubjectOutcome,
)
from service.errors import ConflictError, InvalidInputError
from service.exactness.service import certified_audits
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
    method = pass_method(model, body.method, body.method_config)
    canonical = json.dumps(body.canonical(), sort_keys=True, separators=(",", ":"))
    hasher = TenantRepository.from_session(session).hasher(tenant_id)
    deletions = DeletionRepository.from_session(session)
    if idempotency_key is not None:
        earlier = deletions.by_key(tenant_id, idempotency_key, canonical, hasher)
        if earlier is not None:
            return Accepted(earlier, created=False)

    now = utcnow()
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
    items: list[tuple[str, int | None, ItemOutcome]] = []
    for external_id in ids:
        if external_id in by_external_id:
            items.append((external_id, by_external_id[external_id], ItemOutcome.deleted))
        elif external_id in deleted_before:
            items.append((external_id, deleted_before[external_id], ItemOutcome.already_deleted))
        else:
            items.append((external_id, None, ItemOutcome.unknown))

    lineage = LineageRepository.from_session(session)
    approximate = bool(marked) and (
        body.method is not None or wants_approximation(session, model, approximation)
    )
    deactivation = lineage.deactivate(model, marked, purge_payloads=not approximate, now=now)
    request = deletions.new(
        tenant_id=tenant_id,
        model_id=model.id,
        body=canonical,
        hasher=hasher,
        received_at=received,
        idempotency_key=idempotency_key,
        subject_id=body.subject_id,
    )
    deletions.advance(request, DeletionStatus.deactivated)
    request.serving_generation = model.serving_generation
    if approximate:
        keep_payloads(request, approximation)
    if body.subject_id is not None and not marked:
        # Nothing live: deleted by an earlier request, or never known; say which.
        request.partial = not deletions.subject_deleted_before(model.id, body.subject_id, hasher)
    deletions.add_items(request, items, hasher)
    lineage.link_invalidation(deactivation.invalidated_layer_ids, request.id)
    jobs: list[Job] = []
    if marked:
        prefixes = lineage.prefixes(model.id, shard_ids=deactivation.shard_ids)
        approximate_job = None
        if approximate:
            shape = shape or (RequestShape.subject if body.subject_id else RequestShape.samples)
            approximate_job = plan_pass(
                session,
                model,
                request,
                deactivation,
                method,
                shape,
                {p.sequence_id: p for p in prefixes},
            )
            if approximate_job is None:
                lifecycle.purge_payloads(session, request, reason="no layer to approximate")
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
        if approximate_job is not None:
            jobs.append(approximate_job)
    AuditRepository.from_session(session).append(
        audit_chain(model.id),
        actor=actor,
        action="deletion.deactivated",
        payload={
            "deletion_id": str(request.id),
            "counts": _counts(request).model_dump(),
            "ids_digest": hashlib.sha256("\n".join(sorted(map(hasher, ids))).encode()).hexdigest(),
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
    events.emit(session, tenant_id, "deletion.deactivated", events.deletion_data(request))
    if not jobs:
        lifecycle.complete_deletions(session, [request], retrained=False)
    unknown = [external_id for external_id, _, o in items if o is ItemOutcome.unknown]
    return Accepted(
        request,
        created=True,
        unknown_ids=unknown,
        job_ids=[j.id for j in jobs],
        invalidated=deactivation.invalidated_layer_ids,
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
    request = DeletionRepository.from_session(session).get(deletion_id, tenant_id=tenant_id)
    lifecycle.retry_deletion(session, request, actor=actor)
    return request


def get_deletion(session: Session, tenant_id: uuid.UUID, deletion_id: uuid.UUID) -> DeletionPublic:
    request = DeletionRepository.from_session(session).get(deletion_id, tenant_id=tenant_id)
    return deletion_public(session, request)


def deletion_public(session: Session, request: DeletionRequest) -> DeletionPublic:
    return deletions_public(session, [request])[0]


def accepted_public(session: Session, accepted: Accepted) -> DeletionPublic:
    """The 202's body: from what the request wrote, or read back for a replayed key."""
    if not accepted.created:
        return deletion_public(session, accepted.request)
    return _public(accepted.request, accepted.unknown_ids, accepted.job_ids, accepted.invalidated)


def deletions_public(session: Session, requests: list[DeletionRequest]) -> list[DeletionPublic]:
    """The public view of requests, with two queries for all of them."""
    deletions = DeletionRepository.from_session(session)
    ids = [r.id for r in requests]
    unknown = deletions.unknown_ids_many(ids)
    jobs = deletions.jobs_of_many(ids)
    invalidated = LineageRepository.from_session(session).invalidated_by_many(ids)
    return [
        _public(
            request,
            unknown.get(request.id, []),
            [j.id for j in jobs.get(request.id, [])],
            invalidated.get(request.id, []),
        )
        for request in requests
    ]


def _public(
    request: DeletionRequest,
    unknown_ids: list[str],
    job_ids: list[uuid.UUID],
    invalidated: list[int],
) -> DeletionPublic:
    return DeletionPublic(
        id=request.id,
        model_id=request.model_id,
        status=request.status.value,
        partial=request.partial,
        unknown_ids=unknown_ids,
        subject=_subject_outcome(request),
        counts=_counts(request),
        failure_reason=request.failure_reason,
        serving_generation=request.serving_generation,
        jobs=job_ids,
        layers_invalidated=invalidated,
        received_at=request.received_at,
        deactivated_at=request.deactivated_at,
        approximated_at=request.approximated_at,
        retraining_at=request.retraining_at,
        completed_at=request.completed_at,
        failed_at=request.failed_at,
    )


def _subject_outcome(request: DeletionRequest) -> SubjectOutcome | None:
    """What a subject's request found: its live samples, none left (an earlier request
    deleted them), or no sample of that subject ever (``partial``)."""
    if request.subject_hash is None:
        return None
    if request.n_deleted > 0:
        return "deleted"
    return "unknown" if request.partial else "already_deleted"


def list_deletions(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None = None,
    model_id: uuid.UUID | None = None,
    status: DeletionStatus | None = None,
) -> DeletionPage:
    rows = DeletionRepository.from_session(session).list(
        tenant_id,
        limit=limit + 1,
        model_id=model_id,
        status=status,
        before=_decode_cursor(cursor) if cursor else None,
    )
    page = rows[:limit]
    more = len(rows) > limit
    return DeletionPage(
        items=deletions_public(session, page),
        next_cursor=_encode_cursor(page[-1]) if more and page else None,
    )


def certificate(
    session: Session, tenant_id: uuid.UUID, deletion_id: uuid.UUID
) -> DeletionCertificate:
    deletions = DeletionRepository.from_session(session)
    request = deletions.get(deletion_id, tenant_id=tenant_id)
    model = ModelRepository.from_session(session).get(request.model_id)
    items = deletions.items(request.id)
    jobs = deletions.jobs_of(request.id)
    job_ids = {str(job.id) for job in jobs}
    chain = audit_chain(request.model_id)
    audit = AuditRepository.from_session(session)
    # By index (audit_refs), not by scanning the chain: a certificate costs its own entries.
    entries = audit.about(
        chain, [f"deletion:{request.id}", *(f"job:{job_id}" for job_id in sorted(job_ids))]
    )
    invalidated_layers = [
        layer
        for e in entries
        if e.action == "deletion.deactivated"
        for layer in e.payload.get("invalidated", [])
    ]
    retrained_layers = [
        layer
        for e in entries
        if e.action == "layers.activated"
        for layer in e.payload.get("activated", [])
    ]
    approximate_layers = LineageRepository.from_session(session).approximated_for(request.id)
    stored = _StoredArtifacts.read(
        session,
        [
            *(layer.get("artifact") for layer in [*invalidated_layers, *retrained_layers]),
            *(layer.artifact_ref for layer in approximate_layers),
        ],
    )
    invalidated = [
        stored.certify(layer["layer_id"], layer.get("artifact")) for layer in invalidated_layers
    ]
    retrained = [
        stored.certify(layer["layer_id"], layer.get("artifact")) for layer in retrained_layers
    ]
    passes = {
        layer["layer_id"]: e.payload
        for e in entries
        if e.action == "layers.approximated"
        for layer in e.payload.get("activated", [])
    }
    approximated = [
        ApproximateLayer(
            **stored.certify(layer.id, layer.artifact_ref).model_dump(),
            method=passes.get(layer.id, {}).get("method"),
            method_reason=passes.get(layer.id, {}).get("method_reason"),
            served=layer.state is LayerState.active,
        )
        for layer in approximate_layers
    ]
    if request.status is DeletionStatus.completed:
        unlearning = "exact"
    elif any(layer.served for layer in approximated):
        unlearning = "approximate"
    else:
        unlearning = "pending"
    sample_ids = [i.sample_id for i in items if i.sample_id is not None]
    check = check_chain(session, chain, returned=entries)  # the new entries and those cited
    return DeletionCertificate(
        deletion_id=request.id,
        model_id=request.model_id,
        base_model=BaseModelRef.of(model.base_model),
        status=request.status.value,
        issued_at=utcnow(),
        received_at=request.received_at,
        deactivated_at=request.deactivated_at,
        approximated_at=request.approximated_at,
        completed_at=request.completed_at,
        unlearning=unlearning,
        counts=_counts(request),
        hash_scheme=request.hash_scheme,
        sample_id_hashes=sorted(item.external_id_hash for item in items),
        subject_hash=request.subject_hash,
        payloads_deleted=not SampleRepository.from_session(session).payloads_exist(sample_ids),
        payloads_purged_at=request.payloads_purged_at,
        layers_invalidated=invalidated,
        invalidated_artifacts_deleted=all(
            layer.artifact_deleted or layer.artifact is None for layer in invalidated
        ),
        layers_approximated=approximated,
        layers_retrained=retrained,
        jobs=[job.id for job in jobs],
        audit_chain=chain,
        audit_entries=[AuditLink(seq=e.seq, action=e.action, hash=e.hash) for e in entries],
        audit_chain_verified=check.ok,
        audit_verification=check,
        exactness_audits=certified_audits(session, request),
    )


def verify_inclusion(
    session: Session, tenant_id: uuid.UUID, deletion_id: uuid.UUID, body: DeletionVerify
) -> DeletionVerification:
    """Whether the identifier of ``body`` was part of the tenant's deletion: its hash, under the
    scheme and secret version the deletion was recorded with, is the request's subject hash or
    one of its items'."""
    deletions = DeletionRepository.from_session(session)
    request = deletions.get(deletion_id, tenant_id=tenant_id)
    hasher = TenantRepository.from_session(session).hasher(tenant_id)
    if body.subject_id is not None:
        subject = hasher.under(request.hash_scheme, body.subject_id, request.secret_version)
        included = request.subject_hash is not None and request.subject_hash == subject
    else:
        assert body.sample_id is not None
        digest = hasher.under(request.hash_scheme, body.sample_id, request.secret_version)
        included = deletions.includes(request, digest)
    return DeletionVerification(
        deletion_id=request.id, included=included, scheme=request.hash_scheme
    )


@dataclass(frozen=True)
class _StoredArtifacts:
    """Whether artifacts are still stored: when each was collected, and which something live
    still names."""

    collected_at: dict[str, datetime]
    in_use: set[str]

    @classmethod
    def read(cls, session: Session, refs: Iterable[str | None]) -> _StoredArtifacts:
        wanted = {ref for ref in refs if ref}
        artifacts = ArtifactRepository.from_session(session)
        return cls(
            artifacts.collected_at(wanted),
            artifacts.live_among(wanted, artifacts.pinned_layer_ids()),
        )

    def certify(self, layer_id: int, artifact: str | None) -> CertifiedLayer:
        collected = self.collected_at.get(artifact) if artifact else None
        return CertifiedLayer(
            layer_id=layer_id,
            artifact=artifact,
            artifact_deleted=collected is not None,
            collected_at=collected,
            artifact_in_use=artifact in self.in_use,
        )


def _counts(request: DeletionRequest) -> DeletionCounts:
    return DeletionCounts(
        requested=request.n_requested,
        deleted=request.n_deleted,
        already_deleted=request.n_already_deleted,
        unknown=request.n_unknown,
    )


def _encode_cursor(request: DeletionRequest) -> str:
    raw = f"{request.received_at.isoformat()}|{request.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, _, request_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        received = datetime.fromisoformat(at)
        if received.tzinfo is None:
            received = received.replace(tzinfo=UTC)
        return received, uuid.UUID(request_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise InvalidInputError("`cursor` is not a cursor this API returned") from error
