"""A model's status as the lineage sees it: per shard, what is valid, served and pending."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy.orm import Session

from service.audit.service import stored_verification
from service.db.models import Model, ModelStatus
from service.db.repositories import (
    JobRepository,
    LineageRepository,
    ModelRepository,
    SampleRepository,
    WorkerRepository,
)
from service.db.repositories.audit import audit_chain
from service.db.repositories.lineage import served_shares
from service.jobs.service import no_worker_reason
from service.models.schemas import (
    ComputeStatus,
    EstimatedQuality,
    ModelStatusPublic,
    PendingJob,
    SequenceStatus,
    ServingChoice,
    ShardStatus,
)
from service.quality.views import latest as latest_measurement
from unlearning.sharding import unbalanced_slices


def unbalanced_text(shard: int, slice_: int, size: int, mean: float) -> str:
    return f"shard {shard} slice {slice_} holds {size} samples against a mean of {mean:.1f}"


def model_status(session: Session, model: Model) -> ModelStatusPublic:
    models = ModelRepository.from_session(session)
    lineage = LineageRepository.from_session(session)
    jobs = JobRepository.from_session(session)
    shards = models.shards(model.id)
    deleted = SampleRepository.from_session(session).deleted_count(model.id)
    prefixes = {p.sequence_id: p for p in lineage.prefixes(model.id)}
    choice = lineage.serving_choice(model.id)
    by_shard = defaultdict(list)
    all_sequences = models.sequences(model.id)
    for sequence in all_sequences:
        by_shard[sequence.shard_id].append(sequence)
    live = jobs.live_for_sequences([s.id for s in all_sequences], lock=False)
    out = []
    pending_total = 0
    for shard in shards:
        sequences = []
        for sequence in by_shard[shard.id]:
            pending = [
                PendingJob(
                    job_id=j.id,
                    kind=j.kind.value,
                    status=j.status.value,
                    from_stage=j.from_stage,
                    waiting=j.deferred_reason,
                    waits_until=j.deferred_until,
                )
                for j in live.get(sequence.id, [])
            ]
            pending_total += len(pending)
            sequences.append(
                SequenceStatus(
                    index=sequence.index,
                    order=list(sequence.slice_order),
                    valid_prefix=prefixes[sequence.id].length,
                    exact_prefix=prefixes[sequence.id].exact,
                    pending=pending,
                )
            )
        served = choice.get(shard.index)
        out.append(
            ShardStatus(
                index=shard.index,
                serving=ServingChoice(
                    sequence=served.sequence_index,
                    stages=served.length,
                    approximate_stages=served.approximate_stages,
                )
                if served is not None
                else None,
                deleted_samples=deleted.get(shard.id, 0),
                sequences=sequences,
            )
        )
    live_workers = WorkerRepository.from_session(session).live_by_profile()[model.compute_profile]
    has_live_jobs = pending_total > 0 or model.status is ModelStatus.training
    live_share, depth_share = served_shares(choice, model.n_slices)
    approximate = sum(p.approximate_stages for p in choice.values() if p is not None)
    compute = ComputeStatus(
        profile=model.compute_profile,
        live_workers=live_workers,
        waiting=no_worker_reason(model.compute_profile, live_workers) if has_live_jobs else None,
    )
    sizes = SampleRepository.from_session(session).slice_sizes(model)
    warnings = [f"unbalanced slice: {unbalanced_text(*cell)}" for cell in unbalanced_slices(sizes)]
    if compute.waiting:
        warnings.append(compute.waiting)
    audit = stored_verification(session, audit_chain(model.id))
    if not audit.ok:
        warnings.append(f"audit chain broken at seq {audit.first_bad_seq}: {audit.reason}")
    return ModelStatusPublic(
        model_id=model.id,
        status=model.status.value,
        serving_generation=model.serving_generation,
        unlearning_policy=model.unlearning_policy.value,
        compute=compute,
        placement=model.placement.value,
        pending_retrains=pending_total,
        shards=out,
        warnings=warnings,
        audit=audit,
        measured_quality=latest_measurement(session, model),
        estimated_quality=EstimatedQuality(
            answering=round(live_share * model.n_shards) >= model.min_live_shards,
            min_live_shards=model.min_live_shards,
            live_shards=live_share,
            served_depth=depth_share,
            approximate_depth=approximate / (model.n_shards * model.n_slices),
        ),
    )
