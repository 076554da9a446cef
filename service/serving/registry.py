"""In-memory serving: the base models in use (one engine each, in the process's LRU catalogue),
each model's valid prefixes, hot deactivation.

Every prediction reads the model's ``serving_generation`` (one indexed read) and, when it differs
from the generation this process holds, rebuilds the model's layer map from the lineage before
answering. After computing it reads the generation again; if it moved, the answer stands only if
every layer it used is still valid (checked after that read), and is recomputed on the new map
otherwise. So an answer given after a deletion's 202 never comes from a layer that deletion
invalidated, and deletions elsewhere in the model cost no recomputation. Adapters load lazily
(and stay in the engine's LRU cache); a pub/sub message only lets a process load new layers
before the first request needs them.

Nothing a model no longer serves stays in memory: every reload of a model drops from the
engines' caches each stage that no model held here serves (invalidated, superseded and
discarded layers, whose artifacts artifact collection deletes), and an announcement of
collected artifacts reloads the models that served them. A stage collected under a prediction
that was about to load it is a moved generation: the prediction is computed again. A base
model whose files changed since registration answers a 503 problem (its engine is refused at
load), never a prediction on other weights.

A causal LM's scores follow the same rule as predictions (:meth:`ServingRegistry.score`). Its
generations apply it per token (:class:`service.serving.generation.FreshGeneration`): after each
token is computed the generation is read, and a token whose layers are no longer all valid is
computed again on the current served model before it is emitted. The forward-pass lock is held
per step, so concurrent generations interleave token by token; at most
``UNLEARN_LM_MAX_GENERATIONS`` run at once in a process (:meth:`ServingRegistry.generation_slot`).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker

from service.db.engine import unit_of_work
from service.db.models import ModelStatus, Task
from service.db.repositories import LineageRepository, ModelRepository
from service.engine import BaseModelKey, EngineCatalogue, model_spec
from service.errors import ConflictError, RateLimitedError, ServingUnavailableError
from unlearning.artifacts import ArtifactNotFoundError
from unlearning.s3t import Prediction, S3TConfig, S3TEngine

#: How often a prediction is recomputed when deletions keep landing while it runs.
MAX_ATTEMPTS = 8
#: What a full process tells a client to wait before it asks for another generation.
GENERATION_RETRY_AFTER_S = 1
T = TypeVar("T")


@dataclass(frozen=True)
class ServedShard:
    shard: int
    sequence: int
    length: int
    layer_ids: tuple[int, ...]
    artifacts: tuple[str, ...]
    approximate_stages: int = 0  # the top stages that an approximate pass produced


@dataclass(frozen=True)
class ServedModel:
    """What one generation of a model serves: per live shard, one sequence's valid prefix."""

    model_id: uuid.UUID
    generation: int
    config: S3TConfig
    labels: tuple[str, ...] | None
    shards: tuple[ServedShard, ...]
    base: BaseModelKey
    n_shards: int = 1
    min_live_shards: int = 1
    trained: bool = True  # the model's training has finished once

    @property
    def prefixes(self) -> dict[int, list[str]]:
        return {s.shard: list(s.artifacts) for s in self.shards}

    def refusal(self) -> str | None:
        """Why this generation must not answer (too few live shards), or None."""
        live = len(self.shards)
        if live >= self.min_live_shards:
            return None
        if not self.trained and not live:
            return (
                f"model {self.model_id} is not trained yet: POST /models/{self.model_id}/train, "
                "then predict once its status is `ready`"
            )
        return (
            f"model {self.model_id} is retraining after deletions: {live} of {self.n_shards} "
            f"shards can answer now, fewer than its min_live_shards ({self.min_live_shards}); "
            f"retry shortly (GET /models/{self.model_id}/status shows the retrains)"
        )


@dataclass(frozen=True)
class Served:
    prediction: Prediction
    model: ServedModel
    generation: int  # a generation at which every layer used was still valid


def load_served_model(session: Session, model_id: uuid.UUID) -> ServedModel:
    """The model's current serving choice, read in one transaction with its generation."""
    models = ModelRepository.from_session(session)
    model = models.get(model_id)
    lineage = LineageRepository.from_session(session)
    choice = lineage.serving_choice(model_id)
    chosen = [p for p in choice.values() if p is not None]
    refs = lineage.artifact_refs(i for p in chosen for i in p.layer_ids)
    sequences = models.sequences(model_id)
    spec = model_spec(
        model, [s.slice_order for s in sequences if s.shard_id == sequences[0].shard_id]
    )
    return ServedModel(
        model_id=model_id,
        generation=model.serving_generation,
        config=spec.config,
        labels=tuple(model.labels) if model.task is Task.classification and model.labels else None,
        shards=tuple(
            ServedShard(
                p.shard_index,
                p.sequence_index,
                p.length,
                p.layer_ids,
                tuple(refs[i] for i in p.layer_ids),
                p.approximate_stages,
            )
            for p in chosen
        ),
        base=BaseModelKey.of(model.base_model),
        n_shards=model.n_shards,
        min_live_shards=model.min_live_shards,
        trained=model.status is not ModelStatus.created
        and not (model.status is ModelStatus.training and not chosen),
    )


class ServingRegistry:
    """The models this process serves, keyed by id, each at the generation it last loaded."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        engines: Callable[[], EngineCatalogue],
        *,
        max_generations: int = 4,
    ) -> None:
        self._factory = factory
        self._engines = engines
        self._built: EngineCatalogue | None = None  # once a prediction or preload built it
        self._models: dict[uuid.UUID, ServedModel] = {}
        self._lock = threading.Lock()  # one forward pass at a time: few torch threads
        self.max_generations = max_generations
        self._generations = threading.BoundedSemaphore(max_generations)

    def held_generation(self, model_id: uuid.UUID) -> int | None:
        """The generation this process has loaded for the model, if any."""
        held = self._models.get(model_id)
        return held.generation if held is not None else None

    def generation(self, model_id: uuid.UUID) -> int:
        with unit_of_work(self._factory) as session:
            return ModelRepository.from_session(session).serving_generation(model_id)

    def current(self, model_id: uuid.UUID) -> ServedModel:
        """The model at its current generation, reloaded from the lineage if it moved."""
        held = self._models.get(model_id)
        if held is not None and held.generation == self.generation(model_id):
            return held
        return self.refresh(model_id)

    def refresh(self, model_id: uuid.UUID) -> ServedModel:
        with unit_of_work(self._factory) as session:
            served = load_served_model(session, model_id)
        held = self._models.get(model_id)
        if held is None or held.generation <= served.generation:
            self._models[model_id] = served
        self._drop_unserved()
        return served

    def preload(self, model_id: uuid.UUID) -> None:
        """Load a new generation's adapters now (a pub/sub message said it changed)."""
        served = self.refresh(model_id)
        with self.engines().using(served.base) as engine:
            for shard in served.shards:
                for ref in shard.artifacts:
                    with self._lock:
                        engine.load_stage(ref)

    def evict(self, refs: Collection[str]) -> None:
        """Artifacts were collected (a pub/sub message): reload every held model that served one
        (its generation moved when it stopped serving it), which drops them from memory."""
        gone = set(refs)
        for model in list(self._models.values()):
            if any(ref in gone for shard in model.shards for ref in shard.artifacts):
                self.refresh(model.model_id)
        self._drop_unserved()

    def engines(self) -> EngineCatalogue:
        """This process's engines, built on first use (loading them starts CUDA if a GPU)."""
        self._built = self._engines()
        return self._built

    def engine_of(self, model_id: uuid.UUID) -> S3TEngine:
        """The engine serving the model (its base model's), loaded if needed."""
        return self.engines().engine(self.current(model_id).base)

    def _drop_unserved(self) -> None:
        """Drop from the engines' memory every stage no held model serves."""
        catalogue = self._built
        if catalogue is None:
            return
        served = {
            ref
            for model in list(self._models.values())
            for shard in model.shards
            for ref in shard.artifacts
        }
        with self._lock:
            for engine in catalogue.engines():
                engine.evict_stages(set(engine.loaded_stages) - served)

    @contextmanager
    def computing(self, base: BaseModelKey) -> Iterator[S3TEngine]:
        """The base model's engine, kept loaded and holding the process's forward-pass lock
        while the block runs: hold it for one step, never for a whole generation."""
        with self.engines().using(base) as engine, self._lock:
            yield engine

    @contextmanager
    def generation_slot(self) -> Iterator[None]:
        """One of the process's ``max_generations`` places for a running generation, or a 429
        problem (with Retry-After) when every one is taken."""
        if not self._generations.acquire(blocking=False):
            raise RateLimitedError(
                f"this API process already runs {self.max_generations} generations (at most "
                "UNLEARN_LM_MAX_GENERATIONS); retry shortly",
                retry_after_s=GENERATION_RETRY_AFTER_S,
            )
        try:
            yield
        finally:
            self._generations.release()

    def still_valid(self, served: ServedModel) -> bool:
        return self._still_valid(served)

    def _still_valid(self, served: ServedModel) -> bool:
        """Whether every layer ``served`` used is still valid; read after the generation, so a
        change committed in between can only make this stricter."""
        layer_ids = [i for shard in served.shards for i in shard.layer_ids]
        with unit_of_work(self._factory) as session:
            return not LineageRepository.from_session(session).invalid_among(layer_ids)

    def predict(self, model_id: uuid.UUID, contents: Sequence[str] | Sequence[bytes]) -> Served:
        """Texts, or encoded images for an image model (checked by the API), through the
        model's current valid prefixes; the same freshness rule holds for both."""
        prediction, served, generation = self.answer(
            model_id, lambda engine, s: engine.predict(s.config, contents, s.prefixes)
        )
        return Served(prediction, served, generation)

    def answer(
        self, model_id: uuid.UUID, compute: Callable[[S3TEngine, ServedModel], T]
    ) -> tuple[T, ServedModel, int]:
        """``compute`` on the model's current valid prefixes under the freshness rule: its
        result, the served model that computed it, and a generation at which every layer it
        used was still valid (recomputed on the new map otherwise)."""
        for _ in range(MAX_ATTEMPTS):
            served = self.current(model_id)
            refusal = served.refusal()
            if refusal is not None:
                raise ConflictError(refusal)
            try:
                with self.computing(served.base) as engine:
                    result = compute(engine, served)
            except ArtifactNotFoundError:  # collected: the model moved on since `served`
                if self.generation(model_id) == served.generation:
                    raise
                continue
            generation = self.generation(model_id)
            if generation == served.generation or self._still_valid(served):
                return result, served, generation
        raise ServingUnavailableError("the model changed during every attempt to answer; retry")
