"""A causal LM through the service, end to end: a tiny Llama instruction-tuned through the API,
generating (JSON and server-sent events) and scoring; a subject's deletion, after which no
token and no score comes from a layer it invalidated (also mid-generation: the token is
computed again on the new layers); the retrain, bitwise what training without the subject
gives, its certificate, and no trace of the deleted conversation in the database."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import Base, Layer, LayerState
from service.engine import EngineCatalogue
from service.serving.generation import FreshGeneration
from service.serving.registry import ServingRegistry
from service.settings import Settings
from tests.integration.api import Api, InProcessWorker, invalidated_by, problem, trained_without
from tests.integration.pipeline.llm import (
    LLM_MODEL,
    chat_rows,
    register_tiny_llama,
    trained_llm,
)
from unlearn_client import Message, UnlearnClient, ValidationError
from unlearning.families import Conversation
from unlearning.s3t import Sampling

pytestmark = pytest.mark.integration
N_ROWS = 16
MARKER = "zq-canary-5e1d"
#: The main flow runs on both backends; the rest differ in the service, not the database.
SQLITE = pytest.mark.parametrize("fresh_db", ["sqlite"], indirect=True)


@pytest.fixture
def targets(db: sessionmaker[Session], settings: Settings, llama_dir: Path) -> list[str]:
    return register_tiny_llama(db, settings, llama_dir)


def _active(db: sessionmaker[Session]) -> set[int]:
    with db() as session:
        return set(session.scalars(sa.select(Layer.id).where(Layer.state == LayerState.active)))


def _tables(db: sessionmaker[Session]) -> str:
    with db() as session:
        return "\n".join(
            " ".join(str(value) for value in row)
            for table in Base.metadata.sorted_tables
            for row in session.execute(sa.select(table))
        )


def _events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Server-sent events as (name, data)."""
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((fields["event"], json.loads(fields["data"])))
    return out


def test_a_causal_lm_trains_generates_scores_and_forgets_a_subject(
    api: Api,
    admin: Api,
    llm_worker: InProcessWorker,
    db: sessionmaker[Session],
    targets: list[str],
) -> None:
    rows = chat_rows(N_ROWS, marker=MARKER)
    model_id = trained_llm(api, llm_worker, rows)
    model = api.ok(api.get(f"/models/{model_id}"))
    assert (model["task"], model["labels"]) == ("causal_lm", None)
    assert model["config"]["target_modules"] == targets  # every attention and MLP projection
    assert {"q_proj", "v_proj", "gate_proj", "down_proj"} <= set(targets)
    assert MARKER in _tables(db)  # the no-trace check below can see it

    ask = {"prompt": "what is item 3", "max_new_tokens": 6}
    answer = api.ok(api.post(f"/models/{model_id}/generate", ask))
    assert answer["finish_reason"] in ("eos", "length") and answer["token_ids"]
    assert answer["prompt_tokens"] > 0 and answer["rebased"] == 0
    served = {i for shard in answer["shards"] for i in shard["layers"]}
    assert set(answer["layers"]) == served and served <= _active(db)
    assert api.ok(api.post(f"/models/{model_id}/generate", ask)) == answer  # greedy: the same

    streamed = api.post(f"/models/{model_id}/generate", {**ask, "stream": True})
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith(
        "text/event-stream"
    )
    events = _events(streamed.text)
    assert [name for name, _ in events][-1] == "done"
    pieces = [data for name, data in events if name == "token"]
    assert pieces[0]["shards"] and all(p["shards"] is None for p in pieces[1:])
    done = events[-1][1]
    assert "".join(p["text"] for p in pieces) == done["text"] == answer["text"]
    assert done["token_ids"] == answer["token_ids"] and done["layers"] == answer["layers"]

    sampled = {**ask, "temperature": 0.9, "top_p": 0.9, "seed": 5}
    first = api.ok(api.post(f"/models/{model_id}/generate", sampled))
    assert (
        api.ok(api.post(f"/models/{model_id}/generate", sampled))["token_ids"]
        == (first["token_ids"])
    )  # seeded sampling draws the same tokens

    completions = ["item 3 is good", "item 3 is bad"]
    scored = api.ok(
        api.post(
            f"/models/{model_id}/score", {"prompt": "what is item 3", "completions": completions}
        )
    )
    assert len(scored["scores"]) == 2 and set(scored["layers"]) <= _active(db)
    for score in scored["scores"]:
        assert len(score["logprobs"]) == len(score["token_ids"]) > 0
        assert all(lp <= 0 for lp in score["logprobs"])
        assert score["total"] == pytest.approx(sum(score["logprobs"]))
    chat = {"messages": [{"role": "user", "content": "what is item 3"}], "completions": completions}
    assert api.ok(api.post(f"/models/{model_id}/score", chat))["scores"] == scored["scores"]

    deletion = api.ok(api.post("/deletions", {"model_id": model_id, "subject_id": "user1"}), 202)
    invalidated = invalidated_by(api, deletion["id"])
    assert invalidated & served, "the deletion turned off no served layer: nothing was tested"
    after = api.ok(api.post(f"/models/{model_id}/generate", ask))
    assert not set(after["layers"]) & invalidated
    assert not {i for s in after["shards"] for i in s["layers"]} & invalidated
    rescored = api.ok(
        api.post(
            f"/models/{model_id}/score", {"prompt": "what is item 3", "completions": completions}
        )
    )
    assert not set(rescored["layers"]) & invalidated

    assert llm_worker.drain() >= 1
    assert api.ok(api.get(f"/deletions/{deletion['id']}"))["status"] == "completed"
    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    assert certificate["layers_retrained"]
    gone = {r["external_id"] for r in rows if r["subject_id"] == "user1"}
    engines = llm_worker.engines
    assert isinstance(engines, EngineCatalogue)
    [engine] = engines.engines()
    reference = trained_without(engine, model, rows, gone, placed=llm_worker.placements(model_id))
    with db() as session:
        active = set(
            session.scalars(sa.select(Layer.artifact_ref).where(Layer.state == LayerState.active))
        )
    assert active == reference  # bitwise what training without the subject gives
    assert MARKER not in _tables(db)  # the deleted conversation is gone, not just unused
    page = admin.get(f"/dashboard/models/{model_id}")
    assert page.status_code == 200 and 'data-task="causal_lm"' in page.text
    assert MARKER not in page.text
    final = api.ok(api.post(f"/models/{model_id}/generate", ask))
    assert not set(final["layers"]) & invalidated and set(final["layers"]) <= _active(db)


@SQLITE
def test_a_deletion_mid_generation_recomputes_the_next_token_on_other_layers(
    api: Api,
    llm_worker: InProcessWorker,
    db: sessionmaker[Session],
    targets: list[str],
) -> None:
    """Per token: a deletion lands after two tokens of a generation; the third is computed
    again on the layers served now, and every later token comes from none of its layers."""
    model_id = trained_llm(api, llm_worker, chat_rows(N_ROWS))
    registry: ServingRegistry = api.client.app.state.serving  # type: ignore[attr-defined]
    prompt = Conversation.prompt("what is item 3")
    with FreshGeneration(
        registry, uuid.UUID(model_id), prompt, Sampling(), max_new_tokens=8, max_prompt_tokens=64
    ) as generation:
        before = [generation.step() for _ in range(2)]
        assert not any(step.rebased for step in before)
        used_before = {i for s in before[-1].model.shards for i in s.layer_ids}
        deletion = api.ok(
            api.post("/deletions", {"model_id": model_id, "subject_id": "user2"}), 202
        )
        invalidated = invalidated_by(api, deletion["id"])
        assert used_before & invalidated, "the deletion missed the generation's layers"
        # A score first (nothing in this process has looked at the model since the deletion).
        ask = {"prompt": "what is item 3", "completions": ["item 3 is good"]}
        scored = api.ok(api.post(f"/models/{model_id}/score", ask))
        assert not set(scored["layers"]) & invalidated
        after = [generation.step() for _ in range(3)]
        for step in after:
            assert not {i for s in step.model.shards for i in s.layer_ids} & invalidated
            assert step.generation >= deletion["serving_generation"]
        assert after[0].rebased and generation.rebases == 1
    assert len(generation.generated) == 5


@SQLITE
def test_concurrent_generations_interleave_and_the_process_bounds_them(
    api: Api,
    llm_worker: InProcessWorker,
    settings: Settings,
    targets: list[str],
) -> None:
    model_id = trained_llm(api, llm_worker, chat_rows(N_ROWS))
    registry: ServingRegistry = api.client.app.state.serving  # type: ignore[attr-defined]
    prompt = Conversation.prompt("what is item 3")
    ask = {"prompt": "what is item 3", "max_new_tokens": 4}
    alone = api.ok(api.post(f"/models/{model_id}/generate", ask))["token_ids"]
    opened = [
        FreshGeneration(
            registry,
            uuid.UUID(model_id),
            prompt,
            Sampling(),
            max_new_tokens=4,
            max_prompt_tokens=64,
        )
        for _ in range(registry.max_generations)
    ]
    try:
        for _ in range(4):  # token by token, in turns: the lock is held per step
            for generation in opened:
                generation.step()
        assert all(g.generated == alone for g in opened)
        full = problem(api.post(f"/models/{model_id}/generate", ask), 429)
        assert "UNLEARN_LM_MAX_GENERATIONS" in full["detail"]
        assert int(api.post(f"/models/{model_id}/generate", ask).headers["Retry-After"]) >= 1
    finally:
        for generation in opened:
            generation.close()
    assert api.ok(api.post(f"/models/{model_id}/generate", ask))["token_ids"] == alone


@SQLITE
def test_limits_and_misuse_are_clear_problems(
    api: Api,
    keys: dict[str, str],
    llm_worker: InProcessWorker,
    settings: Settings,
    targets: list[str],
) -> None:
    # A causal LM needs a decoder, a decoder serves causal LMs only, and has no labels.
    on_encoder = problem(api.post("/models", {**LLM_MODEL, "base_model": "tiny-bert"}), 422)
    assert "decoder" in on_encoder["detail"] and "tiny-bert" in on_encoder["detail"]
    classifier_on_decoder = {**LLM_MODEL, "task": "classification", "labels": ["a", "b"]}
    wrong = problem(api.post("/models", classifier_on_decoder), 422)
    assert "causal_lm only" in wrong["detail"]
    labelled = problem(api.post("/models", {**LLM_MODEL, "labels": ["a", "b"]}), 422)
    assert "`labels`" in labelled["detail"]

    model_id = trained_llm(api, llm_worker, chat_rows(8))
    bad_rows = [
        {"external_id": "b1", "prompt": "hi", "response": "yo", "label": "pos"},
        {"external_id": "b2", "text": "plain text"},
        {"external_id": "b3", "prompt": "hi"},
        {"external_id": "b4", "messages": [{"role": "user", "content": "hi"}]},
        {
            "external_id": "b5",
            "messages": [
                {"role": "assistant", "content": "first"},
                {"role": "user", "content": "hi"},
            ],
        },
        {"external_id": "b6", "prompt": "hi", "response": "   "},
        {"external_id": "b7", "prompt": "hi", "response": "yo", "messages": []},
    ]
    result = api.ok(api.post(f"/models/{model_id}/samples", {"samples": bad_rows}))
    assert result["stored"] == 0
    details = {e["external_id"]: e["detail"] for e in result["errors"]}
    assert "`label` is for classification" in details["b1"]
    assert "`text` is for classification" in details["b2"]
    assert "both `prompt` and `response`" in details["b3"]
    assert "end with an assistant turn" in details["b4"]
    assert "must be a user turn" in details["b5"]
    assert "non-blank" in details["b6"]
    assert "either `prompt` and `response`, or `messages`" in details["b7"]

    on_bert = {
        **LLM_MODEL,
        "task": "classification",
        "labels": ["a", "b"],
        "base_model": "tiny-bert",
    }
    classifier = api.ok(api.post("/models", on_bert), 201)
    row = {"external_id": "x", "prompt": "hi", "response": "yo", "label": "a"}
    refused = api.ok(api.post(f"/models/{classifier['id']}/samples", {"samples": [row]}))
    assert "`prompt` is for causal_lm models" in refused["errors"][0]["detail"]
    unlabelled = {"external_id": "y", "text": "hi"}
    refused = api.ok(api.post(f"/models/{classifier['id']}/samples", {"samples": [unlabelled]}))
    assert "needs a `label`" in refused["errors"][0]["detail"]

    # Each endpoint for its task.
    predicted = problem(api.post(f"/models/{model_id}/predict", {"texts": ["hi"]}), 422)
    assert "generate" in predicted["detail"] and predicted["type"].endswith("wrong-task")
    for path in ("generate", "score"):
        body = {"prompt": "hi", "completions": ["yo"]} if path == "score" else {"prompt": "hi"}
        asked = problem(api.post(f"/models/{classifier['id']}/{path}", body), 422)
        assert "predict" in asked["detail"] and asked["type"].endswith("wrong-task")
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    ends_with_answer = {"messages": turns}
    assert (
        "user turn"
        in problem(api.post(f"/models/{model_id}/generate", ends_with_answer), 422)["detail"]
    )
    both = problem(
        api.post(f"/models/{model_id}/generate", {"prompt": "hi", **ends_with_answer}), 422
    )
    assert both["type"].endswith("validation")

    # The limits, as settings.
    settings.lm_max_new_tokens = 4
    settings.lm_max_prompt_tokens = 12
    settings.lm_max_completions = 2
    many = problem(
        api.post(f"/models/{model_id}/generate", {"prompt": "hi", "max_new_tokens": 5}), 422
    )
    assert "UNLEARN_LM_MAX_NEW_TOKENS" in many["detail"]
    long = {"prompt": " ".join(["word"] * 30), "max_new_tokens": 2}
    assert (
        "UNLEARN_LM_MAX_PROMPT_TOKENS"
        in problem(api.post(f"/models/{model_id}/generate", long), 422)["detail"]
    )
    assert (
        "UNLEARN_LM_MAX_PROMPT_TOKENS"
        in problem(
            api.post(f"/models/{model_id}/score", {"prompt": long["prompt"], "completions": ["a"]}),
            422,
        )["detail"]
    )
    three = {"prompt": "hi", "completions": ["a", "b", "c"]}
    assert (
        "UNLEARN_LM_MAX_COMPLETIONS"
        in problem(api.post(f"/models/{model_id}/score", three), 422)["detail"]
    )
    wordy = {"prompt": "hi", "completions": [" ".join(["word"] * 6)]}
    assert (
        "UNLEARN_LM_MAX_NEW_TOKENS"
        in problem(api.post(f"/models/{model_id}/score", wordy), 422)["detail"]
    )
    settings.lm_max_prompt_tokens = 100
    settings.lm_max_new_tokens = 1000
    context = problem(
        api.post(f"/models/{model_id}/generate", {"prompt": "hi", "max_new_tokens": 500}), 422
    )
    assert "context of 128 tokens" in context["detail"]
    stopped = api.ok(
        api.post(f"/models/{model_id}/generate", {"prompt": "hi", "max_new_tokens": 4})
    )
    assert stopped["finish_reason"] in ("eos", "length")
    # Another tenant's model is not found, as for predictions.
    other = Api(api.client, keys["b"])
    problem(other.post(f"/models/{model_id}/generate", {"prompt": "hi"}), 404)
    problem(other.post(f"/models/{model_id}/score", {"prompt": "hi", "completions": ["a"]}), 404)


@SQLITE
def test_the_client_generates_streams_and_scores(
    api: Api, llm_worker: InProcessWorker, targets: list[str]
) -> None:
    """unlearn_client against this app (through the test client): the three calls."""
    model_id = trained_llm(api, llm_worker, chat_rows(N_ROWS))
    token = api.headers["Authorization"].removeprefix("Bearer ")

    def forward(request: httpx.Request) -> httpx.Response:
        answer = api.client.request(
            request.method, request.url.path, content=request.read(), headers=request.headers
        )
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    transport = httpx.MockTransport(forward)
    with UnlearnClient("http://testserver", token, transport=transport) as client:
        answer = client.generate(model_id, "what is item 3", max_new_tokens=5)
        events = list(client.generate_stream(model_id, "what is item 3", max_new_tokens=5))
        assert [e.event for e in events][-1] == "done" and events[-1].done == answer
        assert "".join(e.piece["text"] for e in events if e.piece) == answer["text"]
        messages: list[Message] = [{"role": "user", "content": "what is item 3"}]
        scored = client.score(model_id, ["item 3 is good"], messages=messages)
        assert scored["scores"][0]["total"] == pytest.approx(sum(scored["scores"][0]["logprobs"]))
        with pytest.raises(ValidationError) as refused:
            list(client.generate_stream(model_id, "hi", max_new_tokens=100_000))
        assert "UNLEARN_LM_MAX_NEW_TOKENS" in refused.value.problem["detail"]


def test_a_causal_lm_measures_its_token_loss_on_its_evaluation_split(
    api: Api, llm_worker: InProcessWorker, targets: list[str]
) -> None:
    """The evaluation split of a causal LM: conversations never trained on, whose last
    assistant turn's mean token loss is the measurement (checked against POST /score)."""
    held_out = [
        {"external_id": f"e{i}", "prompt": f"what is item {i}", "response": f"item {i} is good"}
        for i in (100, 101, 102)
    ]
    model_id = trained_llm(
        api, llm_worker, chat_rows(N_ROWS) + [{**r, "split": "eval"} for r in held_out]
    )
    assert llm_worker.measure() == 1
    measured = api.ok(api.get(f"/models/{model_id}/status"))["measured_quality"]
    assert (measured["metric"], measured["n_eval"], measured["current"]) == ("token_loss", 3, True)
    losses = []
    for row in held_out:
        body = {"prompt": row["prompt"], "completions": [row["response"]]}
        (scored,) = api.ok(api.post(f"/models/{model_id}/score", body))["scores"]
        losses.append(-scored["total"] / len(scored["logprobs"]))
    assert measured["value"] == pytest.approx(sum(losses) / len(losses), rel=1e-4)
    assert measured["loss"] == pytest.approx(measured["value"])
