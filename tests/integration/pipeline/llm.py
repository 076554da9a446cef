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


def trained_llm(
    api: Api, worker: InProcessWorker, rows: list[dict[str, Any]], **settings: Any
) -> str:
    return trained_model(api, worker, rows, {**LLM_MODEL, "labels": None, **settings})
