"""A tiny Llama causal LM through the service: its base model, its samples and settings, and
the exactness reference of a retrain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.base_models.service import register
from service.db.engine import unit_of_work
from service.settings import Settings
from tests.integration.api import Api, InProcessWorker, trained_model
from unlearning.families import Conversation
from unlearning.s3t import ModelSpec, S3TConfig, S3TEngine, TrainingSample
from unlearning.sharding import place

TINY_LLAMA = "tiny-llama"
#: A causal LM small enough to train in seconds on the tiny Llama (the template takes about 12
#: of its tokens).
LLM_MODEL: dict[str, Any] = {
    "name": "chat",
    "task": "causal_lm",
    "base_model": TINY_LLAMA,
    "n_shards": 2,
    "n_slices": 2,
    "budget": 2,
    "lora_rank": 4,
    "epochs_per_stage": 2,
    "batch_size": 4,
    "max_length": 32,
    "learning_rate": 5e-3,
    "seed": 7,
}
SUBJECTS = 4


def register_tiny_llama(db: sessionmaker[Session], settings: Settings, folder: Path) -> list[str]:
    """Register the folder as ``tiny-llama``; returns its default LoRA targets."""
    with unit_of_work(db) as session:
        base = register(session, settings, TINY_LLAMA, str(folder))
        return list(base.default_targets)


def chat_rows(n: int, *, marker: str = "") -> list[dict[str, Any]]:
    """``n`` instruction samples of ``SUBJECTS`` data subjects; every third as chat messages.
    Row 1 (subject ``user1``) carries ``marker`` in its response."""
    rows: list[dict[str, Any]] = []
    for i in range(n):
        response = f"item {i} is {'good' if i % 2 else 'bad'}" + (f" {marker}" if i == 1 else "")
        row: dict[str, Any] = {"external_id": f"c{i:03d}", "subject_id": f"user{i % SUBJECTS}"}
        if i % 3 == 2:
            row["messages"] = [
                {"role": "system", "content": "answer briefly"},
                {"role": "user", "content": f"what is item {i}"},
                {"role": "assistant", "content": response},
            ]
        else:
            row |= {"prompt": f"what is item {i}", "response": response}
        rows.append(row)
    return rows


def conversation(row: dict[str, Any]) -> Conversation:
    if "messages" in row:
        return Conversation(tuple((m["role"], m["content"]) for m in row["messages"]))
    return Conversation.pair(row["prompt"], row["response"])


def trained_llm(
    api: Api, worker: InProcessWorker, rows: list[dict[str, Any]], **settings: Any
) -> str:
    return trained_model(api, worker, rows, {**LLM_MODEL, "labels": None, **settings})


def llm_trained_without(
    engine: S3TEngine, model: dict[str, Any], rows: list[dict[str, Any]], gone: set[str]
) -> set[str]:
    """The artifacts of training the model (as `GET /models/{id}` shows it) from scratch on
    ``rows`` minus the external ids ``gone``."""
    config = S3TConfig.from_dict(
        {
            **model["config"],
            "n_shards": model["n_shards"],
            "n_slices": model["n_slices"],
            "budget": model["budget"],
            "task": "causal_lm",
            "n_labels": 1,
        }
    )
    spec = ModelSpec(config, tuple(tuple(o) for o in model["sequence_orders"]))
    remaining = [
        TrainingSample(
            r["external_id"],
            *place(
                model["id"],
                r["external_id"],
                r.get("subject_id"),
                config.n_shards,
                config.n_slices,
                model["placement"],
            ),
            conversation(r),
        )
        for r in rows
        if r["external_id"] not in gone
    ]
    return {layer.artifact for layer in engine.train(spec, remaining)}
