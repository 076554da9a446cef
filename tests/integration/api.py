"""Helpers for HTTP tests: keys for two tenants, auth headers, problem checks, and running the
queued jobs in this process (the worker-process tests run them in a real worker instead)."""

from __future__ import annotations

import base64
import functools
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.approximation.runner import run_approximate_job
from service.artifacts.collection import collect
from service.db.engine import make_engine, make_session_factory, unit_of_work
from service.db.models import Job, JobKind, JobStatus, Layer, LayerState, Role, Sample, Shard, Slice
from service.db.repositories import ApiKeyRepository, TenantRepository
from service.engine import Engines, artifact_store
from service.errors import TenantNotFoundError
from service.exactness.runner import run_exactness_audit
from service.quality.runner import run_measurement
from service.quality.service import schedule_due
from service.settings import Settings
from service.training.runner import run_sequence_job
from tests.tiny_models import TINY_SETTINGS, tiny_backbone
from unlearning.families import Content, Conversation
from unlearning.s3t import ModelSpec, S3TConfig, S3TEngine, TrainingSample
from unlearning.sharding import Placement, place

#: A model small enough to train on the tiny backbone in about a second.
TINY_MODEL = {
    "name": "tiny",
    "labels": ["neg", "pos"],
    "n_shards": 2,
    "n_slices": 2,
    "budget": 2,
    **TINY_SETTINGS,
}


def issue_keys(settings: Settings, role: Role = Role.app) -> dict[str, str]:
    """A key of tenant a and a key of tenant b (the tenants are created on first use)."""
    engine = make_engine(settings.database_url)
    tokens = {}
    with unit_of_work(make_session_factory(engine)) as session:
        tenants = TenantRepository.from_session(session)
        for name in ("a", "b"):
            try:
                tenant = tenants.by_name(name)
            except TenantNotFoundError:
                tenant = tenants.create(name)
            issued = ApiKeyRepository.from_session(session).issue(tenant.id, "k", role)
            tokens[name] = issued.token
    engine.dispose()
    return tokens


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"]
    return body


def samples(
    n: int, *, subjects: dict[int, str] | None = None, prefix: str = "s", split: str = "train"
) -> list[dict[str, Any]]:
    """``n`` learnable rows: the label is carried by one word (``split``: of the evaluation
    split, ``eval``, named ``prefix`` followed by the row's number)."""
    rows = []
    for i in range(n):
        row: dict[str, Any] = {
            "external_id": f"{prefix}{i:03d}",
            "label": "pos" if i % 2 else "neg",
            "text": f"{'good' if i % 2 else 'bad'} item number {i}",
        }
        if subjects and i in subjects:
            row["subject_id"] = subjects[i]
        if split != "train":
            row["split"] = split
        rows.append(row)
    return rows


class InProcessWorker:
    """Runs queued sequence jobs here, as a worker would, on the tiny backbone and the settings'
    artifact store; like a worker's task, each job is followed by artifact collection (unless
    ``collect`` is off)."""

    def __init__(
        self,
        settings: Settings,
        *,
        collect: bool = True,
        engines: Engines | None = None,
    ) -> None:
        """``engines``: what the jobs compute with (an :class:`EngineCatalogue` loads each
        model's registered base model); default the tiny backbone for every model."""
        self.engine = S3TEngine(tiny_backbone(4), artifact_store(settings))
        self.engines: Engines = engines if engines is not None else self.engine
        self.database_url = settings.database_url
        self._db = make_engine(settings.database_url)
        self.factory = make_session_factory(self._db)
        self.collect = collect
        self.collected: list[str] = []  # every artifact deleted after a job, in order

    def queued(self) -> list[uuid.UUID]:
        with self.factory() as session:
            return list(
                session.scalars(
                    sa.select(Job.id)
                    .where(Job.status == JobStatus.queued, Job.sequence_id.is_not(None))
                    .order_by(Job.created_at, Job.id)
                )
            )

    def run(self, job_id: uuid.UUID) -> None:
        run_sequence_job(functools.partial(unit_of_work, self.factory), self.engines, job_id)
        self._collect()

    def _collect(self) -> None:
        if self.collect:
            transaction = functools.partial(unit_of_work, self.factory)
            self.collected += collect(transaction, self.engine.store)

    def _queued_of(self, kind: JobKind) -> list[uuid.UUID]:
        with self.factory() as session:
            return list(
                session.scalars(
                    sa.select(Job.id)
                    .where(Job.status == JobStatus.queued, Job.kind == kind)
                    .order_by(Job.created_at, Job.id)
                )
            )

    def approximate(self) -> int:
        """Run the queued approximate passes (the `deletions` queue); returns how many ran."""
        queued = self._queued_of(JobKind.approximate)
        for job_id in queued:
            run_approximate_job(functools.partial(unit_of_work, self.factory), self.engines, job_id)
            self._collect()
        return len(queued)

    def audit(self) -> int:
        """Run the queued exactness audits (the `training` queue); returns how many ran."""
        queued = self._queued_of(JobKind.exactness_audit)
        for job_id in queued:
            run_exactness_audit(functools.partial(unit_of_work, self.factory), self.engines, job_id)
        return len(queued)

    def measure(self) -> int:
        """Queue the measurements that are due (as a housekeeping round does), then run them
        (the `training` queue); returns how many ran."""
        with unit_of_work(self.factory) as session:
            schedule_due(session)
        queued = self._queued_of(JobKind.measure_quality)
        for job_id in queued:
            run_measurement(functools.partial(unit_of_work, self.factory), self.engines, job_id)
        return len(queued)

    def drain(self) -> int:
        ran = 0
        while jobs := self.queued():
            for job_id in jobs:
                self.run(job_id)
                ran += 1
        return ran

    def placements(self, model_id: str) -> dict[str, Placement]:
        """:func:`recorded_placements` of the model."""
        return recorded_placements(self.database_url, model_id)

    def close(self) -> None:
        self._db.dispose()


class Api:
    """The calls of one tenant's key."""

    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.headers = auth(token)

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.client.get(url, headers=self.headers, **kwargs)

    def post(self, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        return self.client.post(url, json=body, headers={**self.headers, **(headers or {})})

    def ok(self, response: Any, status: int = 200) -> Any:
        assert response.status_code == status, response.text
        return response.json()

    def delete(self, model_id: str, key: str | None = None, **target: Any) -> Any:
        headers = {"Idempotency-Key": key} if key else None
        return self.post("/deletions", {"model_id": model_id, **target}, headers)


def used_layers(prediction: dict[str, Any]) -> set[int]:
    """The layer ids a prediction says answered it."""
    return {layer for shard in prediction["shards"] for layer in shard["layers"]}


def invalidated_by(api: Api, deletion_id: str) -> set[int]:
    """The layers a deletion turned off, from its certificate (never empty when checked)."""
    certificate = api.ok(api.get(f"/deletions/{deletion_id}/certificate"))
    invalidated = {layer["layer_id"] for layer in certificate["layers_invalidated"]}
    assert invalidated, "the deletion invalidated no layer: a freshness check would be empty"
    return invalidated


def trained_model(
    api: Api,
    worker: InProcessWorker,
    rows: list[dict[str, Any]],
    settings: dict[str, Any] | None = None,
) -> str:
    """Create a model (``TINY_MODEL`` with ``settings`` over it), register ``rows``, train."""
    model = api.ok(api.post("/models", {**TINY_MODEL, **(settings or {})}), 201)
    stored = api.ok(api.post(f"/models/{model['id']}/samples", {"samples": rows}))
    assert stored["stored"] == len(rows)
    accepted = api.ok(api.post(f"/models/{model['id']}/train"), 202)
    assert api.ok(api.get(accepted["job_url"]))["status"] == "queued"
    assert worker.drain() == 4  # shards x budget
    job = api.ok(api.get(accepted["job_url"]))
    assert (job["status"], job["progress"], job["children"]) == ("succeeded", 1.0, 4)
    model_id: str = model["id"]
    return model_id


def active_digests(worker: InProcessWorker, model_id: str) -> set[str]:
    """The artifacts of the layers served now."""
    with worker.factory() as session:
        layers = session.scalars(sa.select(Layer).where(Layer.state == LayerState.active)).all()
        return {layer.artifact_ref or "" for layer in layers}


#: The base model name under which tests register the tiny backbone as their default (the
#: app registers ``backbone_path`` under it at start: ``UNLEARN_DEFAULT_BASE_MODEL``).
TINY_BASE = "tiny-bert"


def save_tiny_backbone(path: Path) -> Path:
    """The tiny backbone as a model folder a worker process can load."""
    backbone = tiny_backbone(4)
    backbone.model.save_pretrained(path)
    backbone.tokenizer.save_pretrained(path)
    return path


def recorded_placements(database_url: str, model_id: str) -> dict[str, Placement]:
    """Where registration put each live sample of the model (by external id), as its row
    records it: under `subject` placement a new subject goes to the least-loaded slice, which
    depends on what the model held, so only the record says where a subject's samples live."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(Sample.external_id, Shard.index, Slice.index)
                .join(Shard, Shard.id == Sample.shard_id)
                .join(Slice, Slice.id == Sample.slice_id)
                .where(Sample.model_id == uuid.UUID(model_id), Sample.deleted.is_(False))
            )
            return {external_id: Placement(shard, slice_) for external_id, shard, slice_ in rows}
    finally:
        engine.dispose()


def trained_without(
    engine: S3TEngine,
    model: dict[str, Any],
    rows: list[dict[str, Any]],
    gone: set[str],
    *,
    placed: Mapping[str, Placement] | None = None,
) -> set[str]:
    """The artifacts of training the model (as `GET /models/{id}` shows it) from scratch on the
    rows of :func:`samples` (or image rows, or a causal LM's conversation rows) minus ``gone``:
    the exactness reference of a retrain.

    A row goes where the hash puts it (:func:`place`), but a subject's row under `subject`
    placement goes where registration recorded it (``placed``, from
    :func:`recorded_placements`): the least-loaded slice when the subject arrived."""
    remaining = [r for r in rows if r["external_id"] not in gone]
    balanced = model["placement"] == "subject"
    if balanced and any(r.get("subject_id") for r in remaining):
        assert placed is not None, "give `placed`: subjects' samples go to the lightest slice"
    causal = model["task"] == "causal_lm"
    config = S3TConfig.from_dict(
        {
            **model["config"],
            "n_shards": model["n_shards"],
            "n_slices": model["n_slices"],
            "budget": model["budget"],
            "task": model["task"],
            "n_labels": 1 if causal else len(model["labels"]),
        }
    )
    spec = ModelSpec(config, tuple(tuple(o) for o in model["sequence_orders"]))
    training = [
        TrainingSample(
            r["external_id"],
            *(
                placed[r["external_id"]]
                if placed is not None and balanced and r.get("subject_id")
                else place(
                    model["id"],
                    r["external_id"],
                    r.get("subject_id"),
                    config.n_shards,
                    config.n_slices,
                    model["placement"],
                )
            ),
            *_content_and_target(r, model),
        )
        for r in remaining
    ]
    return {layer.artifact for layer in engine.train(spec, training)}


def conversation(row: dict[str, Any]) -> Conversation:
    """A causal LM's sample row as the worker trains on it."""
    if "messages" in row:
        return Conversation(tuple((m["role"], m["content"]) for m in row["messages"]))
    return Conversation.pair(row["prompt"], row["response"])


def _content_and_target(row: dict[str, Any], model: dict[str, Any]) -> tuple[Content, float]:
    if model["task"] == "causal_lm":
        return conversation(row), 0.0
    content = row["text"] if "text" in row else base64.b64decode(row["image"])
    return content, model["labels"].index(row["label"])
