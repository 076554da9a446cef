"""Scoring one served model on evaluation rows: the computation, without the database.

A classifier's or regressor's rows are encoded, and their frozen bottom computed, once per
process (:class:`FrozenCache`): each later measurement runs only the adapted layers.

The task's metric, and a loss, of the served ensemble (what a prediction would answer):

- a classifier: ``accuracy`` (percent of rows whose arg-max is their label) and the mean
  cross-entropy of the ensemble's mean logits;
- a regressor: ``mae`` (mean absolute error) and the mean squared error;
- a causal LM: ``token_loss``, the mean negative log-probability of each row's last assistant
  turn given the turns before it (nats per token), which is also its loss.

:class:`Outputs` keeps, per evaluation row, its sample id and the served outputs (a classifier's
logits, a regressor's value, a causal LM's token loss): what grading compares between the model
an approximate pass served and the exact model after it. No input and no label is kept.
"""

from __future__ import annotations

import io
import math
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from unlearning.families import Conversation
from unlearning.s3t import S3TConfig, S3TEngine
from unlearning.s3t.config import Task
from unlearning.s3t.ensemble import FrozenRows

#: Rows scored per forward pass.
CHUNK = 64


@dataclass(frozen=True)
class EvalRows:
    """A model's evaluation rows: ids, inputs (texts, encoded images or conversations) and
    targets (class indexes or values; unused for a causal LM)."""

    sample_ids: tuple[int, ...]
    contents: tuple[str | bytes | Conversation, ...]
    targets: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.sample_ids)


@dataclass(frozen=True)
class Outputs:
    """The served outputs per evaluation row, by sample id (a 2-D float array)."""

    sample_ids: NDArray[np.int64]
    values: NDArray[np.float32]

    def to_bytes(self, forget: Outputs | None = None) -> bytes:
        """These outputs, with those on a deletion's kept samples (``forget``) when scored."""
        arrays = {"sample_ids": self.sample_ids, "values": self.values}
        if forget is not None:
            arrays |= {"forget_ids": forget.sample_ids, "forget_values": forget.values}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> tuple[Outputs, Outputs | None]:
        """The evaluation rows' outputs, and the kept samples' when they were scored."""
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            forget = (
                cls(arrays["forget_ids"], arrays["forget_values"])
                if "forget_ids" in arrays
                else None
            )
            return cls(arrays["sample_ids"], arrays["values"]), forget

    def on(self, sample_ids: Sequence[int]) -> NDArray[np.float32]:
        """The rows of these samples (each must be here), in that order."""
        index = {int(i): row for row, i in enumerate(self.sample_ids)}
        picked: NDArray[np.float32] = self.values[[index[i] for i in sample_ids]]
        return picked


@dataclass(frozen=True)
class Scored:
    metric: str  # accuracy | mae | token_loss
    value: float
    loss: float
    outputs: Outputs
    seconds: float


def metric_of(task: Task) -> str:
    return {Task.CLASSIFICATION: "accuracy", Task.REGRESSION: "mae"}.get(task, "token_loss")


def score(
    engine: S3TEngine,
    config: S3TConfig,
    prefixes: Mapping[int, Sequence[str]],
    rows: EvalRows,
) -> Scored:
    """The served ensemble (``prefixes``: each live shard's served artifacts) on ``rows``."""
    started = time.perf_counter()
    if config.task == Task.CAUSAL_LM:
        values = _token_losses(engine, config, prefixes, rows)
        loss = value = float(values.mean())
        outputs = values[:, None]
    else:
        chunks = [
            engine.predict_frozen(
                config, FROZEN.rows(engine, config, rows, i), prefixes
            ).outputs.float()
            for i in range(0, len(rows), CHUNK)
        ]
        predicted = torch.cat(chunks).cpu()
        targets = torch.tensor(rows.targets)
        if config.task == Task.CLASSIFICATION:
            labels = targets.long()
            value = float((predicted.argmax(dim=-1) == labels).float().mean() * 100)
            loss = float(torch.nn.functional.cross_entropy(predicted, labels))
            outputs = predicted.numpy()
        else:
            errors = predicted - targets
            value = float(errors.abs().mean())
            loss = float((errors**2).mean())
            outputs = predicted.numpy()[:, None]
    return Scored(
        metric=metric_of(config.task),
        value=value,
        loss=loss,
        outputs=Outputs(
            np.asarray(rows.sample_ids, dtype=np.int64), np.asarray(outputs, dtype=np.float32)
        ),
        seconds=time.perf_counter() - started,
    )


class FrozenCache:
    """The evaluation rows' frozen states (:meth:`S3TEngine.frozen_rows`), per engine, model
    settings and chunk of rows, kept between measurements (least recently used first out, at
    most ``max_bytes`` of states): the rows are scored again after every change, and their
    encoding and frozen bottom never change."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[object, ...], tuple[weakref.ref[S3TEngine], FrozenRows]]
        self._entries = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def rows(self, engine: S3TEngine, config: S3TConfig, rows: EvalRows, start: int) -> FrozenRows:
        chunk = slice(start, start + CHUNK)
        key = (id(engine), config.max_length, config.n_slices, rows.sample_ids[chunk])
        with self._lock:
            found = self._entries.get(key)
            if found is not None and found[0]() is engine:
                self._entries.move_to_end(key)
                self.hits += 1
                return found[1]
        frozen = engine.frozen_rows(config, list(rows.contents[chunk]))
        with self._lock:
            self._entries[key] = (weakref.ref(engine), frozen)
            while self._entries and self._bytes() > self.max_bytes:
                self._entries.popitem(last=False)
        return frozen

    def _bytes(self) -> int:
        return sum(f.hidden.numel() * f.hidden.element_size() for _, f in self._entries.values())


#: This process's cache (a worker measures its models again and again).
FROZEN = FrozenCache(max_bytes=256 * 2**20)


def _token_losses(
    engine: S3TEngine,
    config: S3TConfig,
    prefixes: Mapping[int, Sequence[str]],
    rows: EvalRows,
) -> NDArray[np.float32]:
    """Each conversation's mean negative log-probability of its last assistant turn."""
    ensemble = engine.lm(config, prefixes)
    prompts: list[Conversation] = []
    completions: list[str] = []
    for content in rows.contents:
        if not isinstance(content, Conversation):
            raise TypeError("a causal LM's evaluation rows are conversations")
        prompts.append(Conversation(content.messages[:-1]))
        completions.append(content.messages[-1][1])
    scored = ensemble.score(prompts, completions)
    return np.asarray(
        [-sum(s.logprobs) / len(s.logprobs) if s.logprobs else math.nan for s in scored],
        dtype=np.float32,
    )
