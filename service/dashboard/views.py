"""What each dashboard page shows, read through the services and repositories (no HTML here)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

from sqlalchemy.orm import Session

from service.audit.schemas import FullVerification
from service.audit.service import check_chain
from service.dashboard import charts
from service.db.models import BaseModel, DeletionStatus, Model
from service.db.models.base import utcnow
from service.db.repositories import (
    AuditRepository,
    BaseModelRepository,
    DeletionRepository,
    JobRepository,
    MetricsRepository,
    ModelRepository,
    WorkerRepository,
)
from service.db.repositories.audit import audit_chain
from service.deletions import certificate as certificates
from service.deletions import views as deletions
from service.deletions.schemas import DeletionCertificate, DeletionPublic
from service.exactness.schemas import ExactnessAuditPublic
from service.exactness.service import latest_audits
from service.jobs.schemas import JobPublic
from service.jobs.service import describe, job_public
from service.models.modality import modality_of
from service.models.schemas import ModelStatusPublic, SequenceStatus, ShardStatus
from service.models.service import get_model
from service.models.status import model_status
from service.observability.metrics import RECENT_PREDICTIONS
from service.quality.schemas import QualityReport
from service.quality.views import quality_report
from service.webhooks import service as webhooks
from service.webhooks.schemas import DeliveryPublic, WebhookPublic

#: Cell states, in the legend's order.
STATES = ("valid", "approximate", "retraining", "training", "parked", "invalid")
LIST_LIMIT = 20
AUDIT_LIMIT = 15
EXACTNESS_LIMIT = 5
QUALITY_LIMIT = 10  # measurements shown on a model page


@dataclass(frozen=True)
class Cell:
    position: int
    state: str
    served: bool
    detail: str


@dataclass(frozen=True)
class SequenceRow:
    index: int
    order: list[int]
    cells: list[Cell]
    valid_prefix: int
    exact_prefix: int


@dataclass(frozen=True)
class ShardGrid:
    index: int
    serving: str
    deleted_samples: int
    sequences: list[SequenceRow]


@dataclass(frozen=True)
class ModelSummary:
    model: Model
    status: ModelStatusPublic

    @property
    def modality(self) -> str:
        """What the model reads (`text` or `image`): an image model's samples and predictions
        are images, which the pages name rather than show."""
        return modality_of(self.model).value


@dataclass(frozen=True)
class AuditView:
    chain: str
    ok: bool
    entries: int
    reason: str | None
    latest: list[tuple[int, datetime, str, str]]
    first_bad_seq: int | None = None
    full: FullVerification | None = None


@dataclass(frozen=True)
class BaseModelSummary:
    base: BaseModel
    models: int  # the tenant's models on it


class Overview:
    """The overview's parts, each read when a template first uses it: a live part's refresh
    reads only what that part shows."""

    def __init__(self, session: Session, tenant_id: uuid.UUID) -> None:
        self.session = session
        self.tenant_id = tenant_id
        self.now = utcnow()

    @cached_property
    def models(self) -> list[ModelSummary]:
        models = ModelRepository.from_session(self.session).of_tenant(self.tenant_id)
        return [ModelSummary(m, model_status(self.session, m)) for m in models]

    @cached_property
    def base_models(self) -> list[BaseModelSummary]:
        """The catalogue, with how many of this tenant's models use each base model."""
        repository = BaseModelRepository.from_session(self.session)
        usage = repository.usage(self.tenant_id)
        return [BaseModelSummary(base, usage.get(base.id, 0)) for base in repository.list()]

    @cached_property
    def counts(self) -> dict[str, int]:
        by_status = MetricsRepository.from_session(self.session).deletions_by_status(self.tenant_id)
        return {s.value: by_status.get(s, 0) for s in DeletionStatus}

    @cached_property
    def deletions(self) -> list[DeletionPublic]:
        return _deletions(self.session, self.tenant_id)

    @cached_property
    def jobs(self) -> list[JobPublic]:
        return _jobs(self.session, self.tenant_id)

    @cached_property
    def charts(self) -> list[charts.Chart]:
        return _charts(self.session, self.tenant_id)

    @cached_property
    def webhooks(self) -> list[WebhookPublic]:
        return webhooks.list_webhooks(self.session, self.tenant_id)

    @cached_property
    def endpoint_urls(self) -> dict[uuid.UUID, str]:
        """The live endpoints' URLs (a deleted endpoint's deliveries show without one)."""
        return {w.id: w.url for w in self.webhooks}

    @cached_property
    def deliveries(self) -> list[DeliveryPublic]:
        return webhooks.recent_deliveries(self.session, self.tenant_id, limit=LIST_LIMIT)


class ModelPage:
    """One model's parts, each read when a template first uses it."""

    def __init__(self, session: Session, tenant_id: uuid.UUID, model_id: uuid.UUID) -> None:
        self.session = session
        self.tenant_id = tenant_id
        self.model = get_model(session, tenant_id, model_id)
        self.now = utcnow()

    @cached_property
    def status(self) -> ModelStatusPublic:
        return model_status(self.session, self.model)

    @property
    def modality(self) -> str:
        return modality_of(self.model).value

    @cached_property
    def grid(self) -> list[ShardGrid]:
        return [_shard_grid(shard, self.model.n_slices) for shard in self.status.shards]

    @cached_property
    def deletions(self) -> list[DeletionPublic]:
        return _deletions(self.session, self.tenant_id, self.model.id)

    @cached_property
    def jobs(self) -> list[JobPublic]:
        return _jobs(self.session, self.tenant_id, self.model.id)

    @cached_property
    def audit(self) -> AuditView:
        return _audit(self.session, self.model.id)

    @cached_property
    def quality(self) -> QualityReport:
        return quality_report(self.session, self.model, limit=QUALITY_LIMIT)

    @cached_property
    def exactness(self) -> list[ExactnessAuditPublic]:
        return latest_audits(self.session, self.tenant_id, self.model.id, limit=EXACTNESS_LIMIT)


@dataclass(frozen=True)
class DeletionPage:
    deletion: DeletionPublic
    certificate: DeletionCertificate
    now: datetime = field(default_factory=utcnow)


def deletion_page(session: Session, tenant_id: uuid.UUID, deletion_id: uuid.UUID) -> DeletionPage:
    return DeletionPage(
        deletion=deletions.get_deletion(session, tenant_id, deletion_id),
        certificate=certificates.deletion_certificate(session, tenant_id, deletion_id),
    )


def job_page(session: Session, tenant_id: uuid.UUID, job_id: uuid.UUID) -> JobPublic:
    return job_public(session, tenant_id, job_id)


def _shard_grid(shard: ShardStatus, n_slices: int) -> ShardGrid:
    served = shard.serving
    return ShardGrid(
        index=shard.index,
        serving=(
            f"sequence {served.sequence}, {served.stages} of {n_slices} stages"
            + (f" ({served.approximate_stages} approximate)" if served.approximate_stages else "")
            if served is not None
            else "nothing valid: shard left out"
        ),
        deleted_samples=shard.deleted_samples,
        sequences=[
            _sequence_row(
                sequence,
                n_slices,
                served_stages=served.stages
                if served is not None and served.sequence == sequence.index
                else 0,
            )
            for sequence in shard.sequences
        ],
    )


def _sequence_row(sequence: SequenceStatus, n_slices: int, *, served_stages: int) -> SequenceRow:
    cells = []
    for position in range(1, n_slices + 1):
        state, detail = cell_state(sequence, position)
        cells.append(Cell(position, state, position <= served_stages, detail))
    return SequenceRow(
        index=sequence.index,
        order=sequence.order,
        cells=cells,
        valid_prefix=sequence.valid_prefix,
        exact_prefix=sequence.exact_prefix,
    )


def cell_state(sequence: SequenceStatus, position: int) -> tuple[str, str]:
    """The state of stage ``position`` of a sequence, and a line of detail for its tooltip."""
    if position <= sequence.exact_prefix:
        return "valid", "trained exactly on valid data"
    if position <= sequence.valid_prefix:
        return "approximate", "edited by an approximate pass; the exact retrain follows"
    for job in sequence.pending:
        if job.from_stage is None or job.from_stage <= position:
            if job.waiting is not None:
                return "parked", f"off: its retrain waits: {job.waiting}"
            state = "training" if job.kind == "train" else "retraining"
            return state, f"{job.kind} job {job.status}"
    return "invalid", "off: saw a deleted sample, no retrain pending"


def _deletions(
    session: Session, tenant_id: uuid.UUID, model_id: uuid.UUID | None = None
) -> list[DeletionPublic]:
    requests = DeletionRepository.from_session(session).list(
        tenant_id, limit=LIST_LIMIT, model_id=model_id
    )
    return deletions.deletions_public(session, requests)


def _jobs(
    session: Session, tenant_id: uuid.UUID, model_id: uuid.UUID | None = None
) -> list[JobPublic]:
    jobs = JobRepository.from_session(session).recent(
        tenant_id, model_id=model_id, limit=LIST_LIMIT
    )
    live = WorkerRepository.from_session(session).live_by_profile()
    return [describe(session, job, live) for job in jobs]


def _audit(session: Session, model_id: uuid.UUID) -> AuditView:
    chain = audit_chain(model_id)
    latest = AuditRepository.from_session(session).latest(chain, limit=AUDIT_LIMIT)
    check = check_chain(session, chain, returned=latest[::-1])  # new entries only, and these
    return AuditView(
        chain=chain,
        ok=check.ok,
        entries=check.entries,
        reason=check.reason,
        latest=[(e.seq, e.at, e.actor, e.action) for e in latest],
        first_bad_seq=check.first_bad_seq,
        full=check.full_verification,
    )


def _charts(session: Session, tenant_id: uuid.UUID) -> list[charts.Chart]:
    window = charts.Window(end=utcnow())
    times = MetricsRepository.from_session(session).deletions_since(tenant_id, window.start)
    received = [(t.received_at, 1.0) for t in times]
    completed = [
        (t.completed_at, (t.completed_at - t.received_at).total_seconds())
        for t in times
        if t.completed_at is not None
    ]
    deactivated = [
        (t.received_at, (t.deactivated_at - t.received_at).total_seconds() * 1000)
        for t in times
        if t.deactivated_at is not None
    ]
    minutes = RECENT_PREDICTIONS.snapshot(tenant_id)
    predictions = [(datetime.fromtimestamp(b.minute * 60, UTC), float(b.count)) for b in minutes]
    worst = [(datetime.fromtimestamp(b.minute * 60, UTC), b.worst * 1000) for b in minutes]
    return [
        charts.bar_chart("Deletions received", "requests", window, received, charts.count),
        charts.bar_chart("Deletions completed", "requests", window, completed, charts.count),
        charts.bar_chart("Time to deactivate (median)", "ms", window, deactivated, charts.median),
        charts.bar_chart("Time to complete (median)", "s", window, completed, charts.median),
        charts.bar_chart("Predictions (this process)", "calls", window, predictions, sum),
        charts.bar_chart("Slowest prediction (this process)", "ms", window, worst, max),
    ]
