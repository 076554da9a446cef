"""What jobs settle for the deletion requests waiting on them: started, completed or failed,
their kept payloads purged.

The deletions domain (``service.deletions``) writes requests and plans their jobs through the
job domains; those domains' runners report here, below all of them, so that nothing beneath
the deletions domain calls back up into it.

- :func:`on_job_started`: deletions waiting on a job that starts are now `retraining`.
- :func:`settle_deletions` runs in the transaction that records a job's outcome: deletions
  waiting on a job whose layers were discarded wait on the sequence's follow-up job instead;
  those whose jobs are all done complete (or fail, with the first failed job's error).
- :func:`complete_deletions` and :func:`purge_payloads` write the audit entries of completion
  and of the payloads' purge.

Functions here flush and never commit: the request's or the job's boundary does.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from service.db import after_commit
from service.db.models import DeletionRequest, DeletionStatus, Job, JobKind, JobStatus
from service.db.models.base import utcnow
from service.db.repositories import (
    AuditRepository,
    DeletionRepository,
    KeptSamplesRepository,
    LineageRepository,
    ModelRepository,
    SampleRepository,
)
from service.db.repositories.audit import SYSTEM_ACTOR, audit_chain
from service.db.repositories.jobs import LIVE_STATUSES
from service.webhooks import events


def on_job_started(session: Session, job: Job) -> None:
    """Deletions waiting on a job that starts are now `retraining`."""
    for request in DeletionRepository.from_session(session).waiting_on(job.id):
        if request.status in (DeletionStatus.deactivated, DeletionStatus.approximated):
            DeletionRepository.from_session(session).advance(request, DeletionStatus.retraining)


def settle_deletions(
    session: Session, requests: list[DeletionRequest], *, follow_up: Job | None = None
) -> None:
    """The deletions that waited on a finished job: with a ``follow_up`` (the job's layers were
    discarded) they wait on it; then those none of whose jobs is still live complete (or fail).
    """
    deletions = DeletionRepository.from_session(session)
    if follow_up is not None:
        for request in requests:
            deletions.link_job(request, follow_up.id)
    final = (DeletionStatus.completed, DeletionStatus.failed)
    open_requests = [r for r in requests if r.status not in final]
    jobs_of = deletions.jobs_of_many([r.id for r in open_requests])
    done = []
    for request in open_requests:
        # An approximate pass is a stopgap: the exact retrains alone decide completion.
        jobs = [j for j in jobs_of.get(request.id, []) if j.kind is not JobKind.approximate]
        if any(j.status in LIVE_STATUSES for j in jobs):
            continue
        failed = [j for j in jobs if j.status is JobStatus.failed]
        if failed:
            reason = f"retrain job {failed[0].id} failed: {failed[0].error}"
            deletions.advance(request, DeletionStatus.failed, reason=reason)
            events.emit(
                session, request.tenant_id, "deletion.failed", events.deletion_data(request)
            )
        else:
            done.append(request)
    complete_deletions(session, done, retrained=True)


def complete_deletions(
    session: Session, requests: list[DeletionRequest], *, retrained: bool
) -> None:
    """Mark requests completed (through `retraining` when they waited for retrains), with one
    audit entry for the batch; payloads an approximate pass did not read yet go now.

    `completed` means nothing derived from the deleted data remains: each request first
    withdraws every approximate layer of its shards, whatever order it sits in (an order whose
    exact retrain is parked falls back to its exact prefix until the retrain restores it), and
    the layers it invalidated, so that no pass still running serves an edit of them
    (:meth:`LineageRepository.withdraw`); the housekeeping round that follows the commit
    deletes their artifacts."""
    if not requests:
        return
    after_commit.relay(session, housekeep=True)
    deletions = DeletionRepository.from_session(session)
    for request in requests:
        withdraw_derived(session, request)
        if retrained and request.status in (
            DeletionStatus.deactivated,
            DeletionStatus.approximated,
        ):
            deletions.advance(request, DeletionStatus.retraining)
        deletions.advance(request, DeletionStatus.completed)
        events.emit(session, request.tenant_id, "deletion.completed", events.deletion_data(request))
        if not _kept_for_grading(session, request):  # else the grading of its pass purges
            purge_payloads(session, request, reason="completed")
    AuditRepository.from_session(session).append(
        audit_chain(requests[0].model_id),
        actor=SYSTEM_ACTOR,
        action="deletions.completed",
        payload={"deletion_ids": [str(r.id) for r in requests]},
    )


def _keeps_payloads(request: DeletionRequest) -> bool:
    """Whether the request kept payloads for its pass (or its grading) and still keeps them."""
    return request.payloads_purge_by is not None and request.payloads_purged_at is None


def _kept_for_grading(session: Session, request: DeletionRequest) -> bool:
    """Whether the request's samples are kept (sealed) for the grading of its pass; read only
    when it kept some (the 202 of a request that kept none reads nothing more)."""
    if not _keeps_payloads(request):
        return False
    kept = KeptSamplesRepository.from_session(session).get(request.id)
    return kept is not None and kept.for_grading


def withdraw_derived(session: Session, request: DeletionRequest) -> list[int]:
    """Withdraw what may derive from the request's data (see :func:`complete_deletions`), with
    a ``layers.withdrawn`` audit entry when something went; returns the layers' ids."""
    if not request.n_deleted:
        return []  # it removed nothing (already deleted, or unknown): nothing derives from it
    shards = SampleRepository.from_session(session).shards_of(
        DeletionRepository.from_session(session).deleted_sample_ids(request.id)
    )
    lineage = LineageRepository.from_session(session)
    withdrawn = lineage.withdraw(request.model_id, shards, request.id)
    if withdrawn:
        refs = lineage.artifact_refs(withdrawn)
        model = ModelRepository.from_session(session).get(request.model_id)
        AuditRepository.from_session(session).append(
            audit_chain(request.model_id),
            actor=SYSTEM_ACTOR,
            action="layers.withdrawn",
            payload={
                "deletion_id": str(request.id),
                "withdrawn": [{"layer_id": i, "artifact": refs.get(i)} for i in withdrawn],
                "serving_generation": model.serving_generation,
            },
        )
    return withdrawn


def purge_payloads(session: Session, request: DeletionRequest, *, reason: str) -> int:
    """Hard-delete the payloads a deletion kept for its approximate pass or its grading (sealed;
    before sealing, deletions kept plaintext rows, deleted here too), once, audited; returns
    how many went. Requests that kept none are left as they are."""
    if not _keeps_payloads(request):
        return 0
    sample_ids = DeletionRepository.from_session(session).deleted_sample_ids(request.id)
    gone = KeptSamplesRepository.from_session(session).drop(request.id)
    gone += SampleRepository.from_session(session).delete_payloads(sample_ids)
    request.payloads_purged_at = utcnow()
    AuditRepository.from_session(session).append(
        audit_chain(request.model_id),
        actor=SYSTEM_ACTOR,
        action="payloads.purged",
        payload={"deletion_id": str(request.id), "reason": reason, "payloads": gone},
    )
    return gone
