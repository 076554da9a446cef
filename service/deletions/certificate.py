"""A deletion's certificate (what it removed, as counts, keyed hashes and artifact digests, with
the audit entries that prove it) and inclusion proofs (was this identifier part of it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from service.audit.service import check_chain
from service.base_models.schemas import BaseModelRef
from service.db.models import DeletionStatus, LayerState
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
from service.deletions.schemas import (
    ApproximateLayer,
    AuditLink,
    CertifiedLayer,
    DeletionCertificate,
    DeletionCounts,
    DeletionVerification,
    DeletionVerify,
)
from service.exactness.service import certified_audits


def deletion_certificate(
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
        counts=DeletionCounts.of(request),
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
