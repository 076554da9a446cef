"""The approximate policies on a causal LM, end to end over HTTP (SQLite; jobs in this process).

Under `approximate_then_exact` (here with NPO) a subject's deletion turns its layers off at
once; the approximate pass then serves the invalidated stages again, and generate and score
answer from those approximate layers (named in the response and counted as approximate stages
of their shards, as predictions are) and from none of the invalidated exact layers. The exact
retrain replaces them, bitwise what training without the subject gives, the certificate says
`exact`, and no approximate layer derived from the subject's data stays servable. Under
`auto` (the policy and the method) a backlogged queue gets a pass, and `auto` picks SSD. A
method that does not fit a causal LM is refused when the model is created.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import (
    Job,
    JobKind,
    JobStatus,
    Layer,
    LayerState,
    Model,
    Shard,
    SliceSequence,
)
from service.engine import EngineCatalogue
from service.settings import Settings
from tests.integration.api import Api, InProcessWorker, invalidated_by, problem, trained_without
from tests.integration.pipeline.llm import (
    LLM_MODEL,
    chat_rows,
    register_tiny_llama,
    trained_llm,
)
from unlearning.sharding import Placement

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("fresh_db", ["sqlite"], indirect=True),
]
N_ROWS = 12
ASK = {"prompt": "what is item 3", "max_new_tokens": 4}
SCORE = {"prompt": "what is item 3", "completions": ["item 3 is good"]}


@pytest.fixture
def tiny_llama(db: sessionmaker[Session], settings: Settings, llama_dir: Path) -> None:
    register_tiny_llama(db, settings, llama_dir)


def _layers(db: sessionmaker[Session], model_id: str) -> dict[int, Layer]:
    """The model's layers, by id."""
    query = (
        sa.select(Layer)
        .join(SliceSequence, Layer.sequence_id == SliceSequence.id)
        .join(Shard, SliceSequence.shard_id == Shard.id)
        .where(Shard.model_id == uuid.UUID(model_id))
    )
    with db() as session:
        return {layer.id: layer for layer in session.scalars(query)}


def _approximate_job(api: Api, deletion: dict[str, Any]) -> dict[str, Any]:
    jobs = [api.ok(api.get(f"/jobs/{job_id}")) for job_id in deletion["jobs"]]
    (job,) = [j for j in jobs if j["kind"] == "approximate"]
    found: dict[str, Any] = job
    return found


def _check_served(
    answer: dict[str, Any], layers: dict[int, Layer], invalidated: set[int]
) -> set[int]:
    """The response's layers: none invalidated, every one servable now, and each shard's
    `approximate_stages` counting exactly its approximate layers. Returns the approximate ones."""
    served = {i for shard in answer["shards"] for i in shard["layers"]}
    assert set(answer["layers"]) == served
    assert not served & invalidated, "an invalidated layer answered"
    assert all(layers[i].state is LayerState.active for i in served)
    for shard in answer["shards"]:
        marked = [i for i in shard["layers"] if layers[i].approximate]
        assert shard["approximate_stages"] == len(marked), shard
    return {i for i in served if layers[i].approximate}


def _subject_with_company(placed: Mapping[str, Placement], rows: list[dict[str, Any]]) -> str:
    """A subject whose shard also holds another subject's samples (with 4 subjects on 2 shards
    there is one): its deletion leaves data for a pass to keep, wherever registration placed
    the subjects (``placed``: the recorded placements). A subject alone in its shard is left to
    the exact retrain."""
    shard_of: dict[str, set[int]] = defaultdict(set)
    for row in rows:
        shard_of[row["subject_id"]].add(placed[row["external_id"]].shard)
    return next(
        subject
        for subject, shards in sorted(shard_of.items())
        if any(shards & others for other, others in shard_of.items() if other != subject)
    )


def _forget_and_serve_approximately(
    api: Api,
    worker: InProcessWorker,
    db: sessionmaker[Session],
    model_id: str,
    subject: str,
    method: str,
) -> tuple[dict[str, Any], set[int]]:
    """A subject's deletion, its pass with ``method``, and generate and score answering from
    the pass's layers. Returns the deletion and the layers it invalidated."""
    before = api.ok(api.post(f"/models/{model_id}/generate", ASK))  # loaded: served from memory
    deletion = api.ok(api.post("/deletions", {"model_id": model_id, "subject_id": subject}), 202)
    assert deletion["status"] == "deactivated"
    assert _approximate_job(api, deletion)["status"] == "queued"
    invalidated = invalidated_by(api, deletion["id"])
    assert set(before["layers"]) & invalidated, "the deletion cut no served layer"
    cut = api.ok(api.post(f"/models/{model_id}/generate", ASK))
    assert not _check_served(cut, _layers(db, model_id), invalidated)  # the exact prefixes only

    assert worker.approximate() == 1
    job = _approximate_job(api, deletion)
    assert job["status"] == "succeeded", job["error"]
    assert job["error"].startswith(f"method {method} ("), job["error"]
    assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "approximated"
    layers = _layers(db, model_id)
    generated = api.ok(api.post(f"/models/{model_id}/generate", ASK))
    approximate = _check_served(generated, layers, invalidated)
    assert approximate, "no approximate layer answered"
    scored = api.ok(api.post(f"/models/{model_id}/score", SCORE))
    assert set(scored["layers"]) == set(generated["layers"])
    assert not set(scored["layers"]) & invalidated
    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    assert certificate["unlearning"] == "approximate" and certificate["payloads_deleted"]
    by_layer = {layer["layer_id"]: layer for layer in certificate["layers_approximated"]}
    assert approximate <= by_layer.keys()
    assert all(by_layer[i]["served"] and by_layer[i]["method"] == method for i in approximate)
    return deletion, invalidated


def _retrained_exactly(
    api: Api,
    worker: InProcessWorker,
    db: sessionmaker[Session],
    model_id: str,
    rows: list[dict[str, Any]],
    subject: str,
    deletion: dict[str, Any],
    invalidated: set[int],
) -> None:
    """The exact retrain of the order each shard serves replaced its approximate layers and
    completed the deletion: an `exact` certificate, and no approximate layer servable (the
    other orders' were withdrawn; parked, they fall back to their exact prefixes). Then the
    parked retrains run: bitwise training without the subject."""
    with db() as session:
        queued = session.scalars(
            sa.select(Job.id).where(Job.kind == JobKind.retrain, Job.status == JobStatus.queued)
        ).all()
    own = [job_id for job_id in queued if str(job_id) in deletion["jobs"]]
    assert own
    for job_id in own:
        worker.run(job_id)
    assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "completed"
    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    assert certificate["unlearning"] == "exact"
    assert certificate["layers_approximated"]
    assert not any(layer["served"] for layer in certificate["layers_approximated"])
    layers = _layers(db, model_id)
    derived = {layer["layer_id"] for layer in certificate["layers_approximated"]}
    # Superseded by the retrains, or withdrawn when the deletion completed: never served again.
    withdrawn = {LayerState.superseded, LayerState.discarded}
    assert all(layers[i].state in withdrawn for i in derived)
    assert all(layer.state in withdrawn for layer in layers.values() if layer.approximate)
    completed = api.ok(api.post(f"/models/{model_id}/generate", ASK))
    assert not _check_served(completed, layers, invalidated)  # exact layers only
    assert api.ok(api.get(f"/models/{model_id}/status"))["estimated_quality"][
        "approximate_depth"
    ] == (0)

    worker.drain()  # the parked orders' retrains
    layers = _layers(db, model_id)
    model = api.ok(api.get(f"/models/{model_id}"))
    gone = {r["external_id"] for r in rows if r["subject_id"] == subject}
    engines = worker.engines
    assert isinstance(engines, EngineCatalogue)
    [engine] = engines.engines()
    active = {layer.artifact_ref for layer in layers.values() if layer.state is LayerState.active}
    assert active == trained_without(engine, model, rows, gone, placed=worker.placements(model_id))
    final = api.ok(api.post(f"/models/{model_id}/generate", ASK))
    assert not _check_served(final, layers, invalidated)


def test_approximate_then_exact_with_npo(
    api: Api, llm_worker: InProcessWorker, db: sessionmaker[Session], tiny_llama: None
) -> None:
    rows = chat_rows(N_ROWS)
    policy = {"unlearning_policy": "approximate_then_exact", "approximate_method": "npo"}
    model_id = trained_llm(api, llm_worker, rows, **policy)
    model = api.ok(api.get(f"/models/{model_id}"))
    assert (model["unlearning_policy"], model["approximate_method"]) == (
        "approximate_then_exact",
        "npo",
    )
    subject = _subject_with_company(llm_worker.placements(model_id), rows)
    deletion, invalidated = _forget_and_serve_approximately(
        api, llm_worker, db, model_id, subject, "npo"
    )
    _retrained_exactly(api, llm_worker, db, model_id, rows, subject, deletion, invalidated)


class TestAuto:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"auto_approximate_wait_s": 0.0})  # any backlog

    def test_auto_approximates_with_ssd_behind_a_backlog(
        self, api: Api, llm_worker: InProcessWorker, db: sessionmaker[Session], tiny_llama: None
    ) -> None:
        rows = chat_rows(N_ROWS)
        model_id = trained_llm(api, llm_worker, rows, unlearning_policy="auto")
        model = api.ok(api.get(f"/models/{model_id}"))
        assert (model["unlearning_policy"], model["approximate_method"]) == ("auto", "auto")
        subject = _subject_with_company(llm_worker.placements(model_id), rows)
        backlog = api.ok(api.post("/models", {**LLM_MODEL, "labels": None}), 201)["id"]
        api.ok(api.post(f"/models/{backlog}/samples", {"samples": chat_rows(4)}))
        api.ok(api.post(f"/models/{backlog}/train"), 202)  # queued, not run: a backlog
        deletion, invalidated = _forget_and_serve_approximately(
            api, llm_worker, db, model_id, subject, "ssd"
        )
        assert "auto: subject" in _approximate_job(api, deletion)["error"]
        _retrained_exactly(api, llm_worker, db, model_id, rows, subject, deletion, invalidated)


@pytest.mark.parametrize(("method", "why"), [("salun", "causal"), ("random_labels", "causal")])
def test_a_method_that_does_not_fit_a_causal_lm_is_a_422(
    api: Api, db: sessionmaker[Session], tiny_llama: None, method: str, why: str
) -> None:
    policy = {"unlearning_policy": "approximate_then_exact", "approximate_method": method}
    body = {**LLM_MODEL, **policy}
    refused = problem(api.post("/models", body), 422)
    assert method in refused["detail"] and why in refused["detail"], refused
    with db() as session:
        assert not session.scalar(sa.select(sa.func.count()).select_from(Model)), "created"
