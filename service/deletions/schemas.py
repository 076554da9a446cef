"""Request and response bodies of the deletion endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.audit.schemas import AuditVerification
from service.base_models.schemas import BaseModelRef
from service.db.hashing import HashScheme
from service.exactness.schemas import ExactnessAuditLink
from service.models.schemas import METHOD_CONFIG_HELP, MethodName

if TYPE_CHECKING:
    from service.db.models import DeletionRequest

MAX_IDS = 10_000
ExternalId = Annotated[str, Field(min_length=1, max_length=255)]


class DeletionCreate(BaseModel):
    """Delete samples of one model, named by their external ids or by their data subject."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_id: uuid.UUID
    sample_ids: list[ExternalId] | None = Field(
        None, min_length=1, max_length=MAX_IDS, description="External ids of the samples."
    )
    subject_id: str | None = Field(
        None, min_length=1, max_length=255, description="Every sample of this data subject."
    )
    method: MethodName | None = Field(
        None,
        description="An approximate pass for this request with this method, before its exact "
        "retrain: overrides the model's `approximate_method`, and asks for a pass even when the "
        "model's policy is `exact` (422 when the method does not fit the model's task or its "
        "base model's modality).",
    )
    method_config: dict[str, Any] | None = Field(
        None,
        max_length=64,
        description=f"{METHOD_CONFIG_HELP} Applies to this request's pass (its `method`, else "
        "the model's), over the model's own `method_config` when the method is the model's. "
        "It does not ask for a pass by itself.",
    )

    @model_validator(mode="after")
    def _one_target(self) -> DeletionCreate:
        if (self.sample_ids is None) == (self.subject_id is None):
            raise ValueError("give exactly one of `sample_ids` and `subject_id`")
        return self

    def canonical(self) -> dict[str, Any]:
        """What the Idempotency-Key is bound to: the same ids in any order are the same body."""
        ids = sorted(set(self.sample_ids)) if self.sample_ids is not None else None
        return {
            "model_id": str(self.model_id),
            "sample_ids": ids,
            "subject_id": self.subject_id,
            "method": self.method,
            # Only when given: a body without it keeps the canonical form (and its key) it had.
            **({"method_config": self.method_config} if self.method_config is not None else {}),
        }


class ClassDeletionCreate(BaseModel):
    """Every sample of one class leaves the model."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=200, description="The class, as a label.")
    path: Literal["exact", "approximate"] = Field(
        "exact",
        description="`exact`: the class's samples are deleted through the normal pipeline "
        "(deactivation, exact retrains; the model's policy applies). `approximate`: the same, "
        "with an approximate pass first, by default `auto` (for a whole class: `suppress_class`).",
    )
    method: MethodName | None = Field(
        None, description="The approximate pass's method (implies `path: approximate`)."
    )
    method_config: dict[str, Any] | None = Field(
        None, max_length=64, description=f"{METHOD_CONFIG_HELP} As in `POST /deletions`."
    )


class DeletionVerify(BaseModel):
    """One identifier to check against a deletion: exactly one of `sample_id` and `subject_id`."""

    model_config = ConfigDict(extra="forbid")

    sample_id: ExternalId | None = Field(None, description="An external id of a sample.")
    subject_id: str | None = Field(
        None, min_length=1, max_length=255, description="A data subject's id."
    )

    @model_validator(mode="after")
    def _one_identifier(self) -> DeletionVerify:
        if (self.sample_id is None) == (self.subject_id is None):
            raise ValueError("give exactly one of `sample_id` and `subject_id`")
        return self


class DeletionVerification(BaseModel):
    deletion_id: uuid.UUID
    included: bool = Field(
        description="`sample_id`: the request named this id (or, for a subject, it was one of "
        "the subject's samples); its hash is among the certificate's `sample_id_hashes`. "
        "`subject_id`: the request named this subject (its hash is `subject_hash`)."
    )
    scheme: HashScheme = Field(
        description="How the deletion's identifier hashes were made (see the certificate's "
        "`hash_scheme`)."
    )


class DeletionCounts(BaseModel):
    requested: int
    deleted: int
    already_deleted: int
    unknown: int

    @classmethod
    def of(cls, request: DeletionRequest) -> DeletionCounts:
        return cls(
            requested=request.n_requested,
            deleted=request.n_deleted,
            already_deleted=request.n_already_deleted,
            unknown=request.n_unknown,
        )


SubjectOutcome = Literal["deleted", "already_deleted", "unknown"]


class DeletionPublic(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    id: uuid.UUID
    model_id: uuid.UUID
    status: str = Field(description="received, deactivated, retraining, completed or failed")
    partial: bool = Field(
        description="Some ids matched no sample (see `unknown_ids`), or the subject is unknown."
    )
    unknown_ids: list[str]
    subject: SubjectOutcome | None = Field(
        None,
        description="For a `subject_id` request: `deleted` (its live samples were), "
        "`already_deleted` (an earlier request deleted them; nothing was left) or `unknown` "
        "(the model never held a sample of this subject: nothing was deleted). None otherwise.",
    )
    counts: DeletionCounts
    failure_reason: str | None
    serving_generation: int | None = Field(
        description="The model's generation once the deletion's layers were deactivated; any "
        "prediction with this generation or later is free of them."
    )
    jobs: list[uuid.UUID] = Field(description="The retrain jobs this deletion waits for.")
    layers_invalidated: list[int] = Field(
        description="The layers this deletion turned off: no prediction answered after its 202 "
        "names one of them in `shards[].layers`."
    )
    received_at: datetime
    deactivated_at: datetime | None
    approximated_at: datetime | None
    retraining_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None


class DeletionPage(BaseModel):
    items: list[DeletionPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class CertifiedLayer(BaseModel):
    layer_id: int
    artifact: str | None
    artifact_deleted: bool = Field(
        description="Its artifact is gone from the store (collected once no live row named it)."
    )
    collected_at: datetime | None = Field(description="When the artifact was deleted.")
    artifact_in_use: bool = Field(
        description="The artifact is kept because something live names the same bytes: a "
        "served layer (content addressing: equal weights), or a pass or retrain still to read it."
    )


class ApproximateLayer(CertifiedLayer):
    method: str | None
    method_reason: str | None = Field(
        description="Why this method: named by the request or the model, or what `auto` chose "
        "for the request's shape."
    )
    served: bool = Field(
        description="Still served: until the exact retrain replaces it, or a deletion of its "
        "shard completes and withdraws it. Never true on a `completed` certificate."
    )


class AuditLink(BaseModel):
    seq: int
    action: str
    hash: str


class DeletionCertificate(BaseModel):
    """What a deletion removed, with no personal data: counts, hashes, layers, digests."""

    model_config = ConfigDict(protected_namespaces=())

    deletion_id: uuid.UUID
    model_id: uuid.UUID
    base_model: BaseModelRef = Field(
        description="The base model the layers sit on; `sha256` is the digest of its weight "
        "files, checked each time a worker loads it: the retrains are exact on those weights."
    )
    status: str
    issued_at: datetime
    received_at: datetime
    deactivated_at: datetime | None
    approximated_at: datetime | None
    completed_at: datetime | None
    unlearning: Literal["pending", "approximate", "exact"] = Field(
        description="`exact` (the deletion is `completed`): the layers that saw the samples "
        "are no longer served and every order the deletion waited for was retrained without "
        "them; every approximate layer of its shards, whatever order it sits in, was withdrawn "
        "(none is served: each may derive from the samples) and its artifact is collected, so "
        "orders whose retrain is still parked serve their exact prefixes meanwhile. "
        "`approximate`: some of the served layers are an approximate pass's output for this "
        "deletion, waiting for their exact retrain. `pending`: neither yet (the affected "
        "shards serve their shorter valid prefixes meanwhile)."
    )
    counts: DeletionCounts
    hash_scheme: HashScheme = Field(
        description="`hmac-sha256`: `sample_id_hashes` and `subject_hash` are HMAC-SHA-256 "
        "under a secret of the tenant that never leaves the service, so that no dictionary "
        "reverses them; check an identifier with `POST /deletions/{id}/verify`. `sha256`: "
        "plain SHA-256, for deletions recorded before identifier hashes were keyed."
    )
    sample_id_hashes: list[str] = Field(
        description="The hash (`hash_scheme`) of each requested external id."
    )
    subject_hash: str | None = Field(description="The hash (`hash_scheme`) of the subject.")
    payloads_deleted: bool = Field(description="No payload row of a deleted sample remains.")
    payloads_purged_at: datetime | None = Field(
        description="When the samples kept (sealed) for an approximate pass, or for its "
        "grading on a model with `grade_approximations`, were purged (None while they are "
        "kept, or if none were: they went with the deactivation). No plaintext payload "
        "outlives the deletion's own transaction."
    )
    layers_invalidated: list[CertifiedLayer]
    invalidated_artifacts_deleted: bool = Field(
        description="Every invalidated layer's artifact (weights that saw the samples) is gone "
        "from the store; see each layer's `collected_at` and `artifact_in_use`. Approximate "
        "layers are deleted too once replaced or withdrawn (`layers_approximated`)."
    )
    layers_approximated: list[ApproximateLayer]
    layers_retrained: list[CertifiedLayer]
    jobs: list[uuid.UUID]
    audit_chain: str
    audit_entries: list[AuditLink]
    audit_chain_verified: bool = Field(
        description="`audit_verification.ok`: no broken link known in the chain (its new "
        "entries and those cited here re-hashed now; the rest by the last full verification)."
    )
    audit_verification: AuditVerification | None = None
    exactness_audits: list[ExactnessAuditLink] = Field(
        description="Exactness audits run after the deletion completed that retrained its "
        "shards from scratch and compared the layers serving them: a check, not a claim."
    )
