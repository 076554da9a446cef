"""The bridge between the service and the S3T engine: the engines a process uses, one per base
model (:class:`EngineCatalogue`, built from the settings: device, artifact store
(:func:`artifact_store`), the memory its base models may hold), and the engine's view of what
the lineage database stores (a model's settings and base model, a sample's text and target)."""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from service.db.models import BaseModel, Model, Sample, SamplePayload, Task
from service.errors import BaseModelUnavailableError, LineageError
from service.settings import Settings, parse_s3_url
from unlearning.artifacts import ArtifactStore, LocalArtifactStore
from unlearning.base_models import BaseModelError, verify
from unlearning.device import local_profile, resolve_device
from unlearning.families import Conversation
from unlearning.object_store import S3ArtifactStore
from unlearning.s3t import ModelSpec, S3TConfig, S3TEngine, TrainingSample, load_backbone

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)
K = TypeVar("K")
V = TypeVar("V")


def artifacts_dir(settings: Settings) -> Path:
    assert settings.artifacts_dir is not None  # filled by the settings validator
    return settings.artifacts_dir


def default_compute_profile(settings: Settings) -> str:
    """The profile of models created without one: ``UNLEARN_COMPUTE_PROFILE``, or this
    machine's own (its device and base precision)."""
    return settings.compute_profile or local_profile(settings.device, settings.base_precision)


def artifact_store(settings: Settings) -> ArtifactStore:
    """The store every process of a deployment shares: the object store ``artifacts_url``
    names, or else the local folder (one machine only)."""
    if settings.artifacts_url:
        return _object_store(
            os.getpid(),
            settings.artifacts_url,
            settings.s3_endpoint_url,
            settings.s3_region,
            settings.s3_max_attempts,
        )
    return LocalArtifactStore(artifacts_dir(settings))


@functools.cache
def _object_store(
    _pid: int, url: str, endpoint_url: str, region: str, max_attempts: int
) -> S3ArtifactStore:
    """One client per process and configuration (building one takes about 0.1 s of CPU, and
    housekeeping asks every round); keyed by the process id, so that a forked child never shares
    its parent's connections."""
    bucket, prefix = parse_s3_url(url)
    return S3ArtifactStore(
        bucket, prefix, endpoint_url=endpoint_url or None, region=region, max_attempts=max_attempts
    )


def s3_client(settings: Settings) -> S3Client:
    """A client of the deployment's S3-compatible server (``s3_endpoint_url``, ``s3_region``;
    credentials from boto3's chain), for the base models stored there."""
    return _object_store(
        os.getpid(),
        "s3://base-models",
        settings.s3_endpoint_url,
        settings.s3_region,
        settings.s3_max_attempts,
    ).client


@dataclass(frozen=True)
class BaseModelKey:
    """What a process needs to load a model's base model: read from the lineage with the job
    or the prediction, so that an engine never trusts a folder the catalogue did not name."""

    name: str
    uri: str
    sha256: str

    @classmethod
    def of(cls, base: BaseModel) -> BaseModelKey:
        return cls(base.name, base.uri, base.sha256)


class SizedLru(Generic[K, V]):
    """Values by key, least recently used first, whose sizes sum to at most ``limit`` bytes:
    adding one drops the least recently used others until they fit, except those pinned (in
    use) and the one just added (a value larger than the limit alone is still held while used).
    Thread-safe; ``load`` runs under the lock, so one key is never loaded twice at once."""

    def __init__(self, limit: int, size: Callable[[V], int]) -> None:
        self.limit = limit
        self._size = size
        self._values: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._pins: Counter[K] = Counter()
        self._lock = threading.RLock()

    def get(self, key: K, load: Callable[[], V]) -> V:
        with self._lock:
            held = self._values.get(key)
            if held is not None:
                self._values.move_to_end(key)
                return held[0]
            value = load()
            self._values[key] = (value, self._size(value))
            self._shrink(keep=key)
            return value

    @contextmanager
    def pinned(self, key: K, load: Callable[[], V]) -> Iterator[V]:
        """The value, never dropped while the block runs."""
        with self._lock:
            value = self.get(key, load)
            self._pins[key] += 1
        try:
            yield value
        finally:
            with self._lock:
                self._pins[key] -= 1
                if self._pins[key] <= 0:
                    del self._pins[key]
                self._shrink(keep=None)

    def _shrink(self, keep: K | None) -> None:
        for key in list(self._values):
            if self.held_bytes <= self.limit:
                return
            if key != keep and not self._pins.get(key):
                del self._values[key]

    @property
    def held_bytes(self) -> int:
        return sum(size for _, size in self._values.values())

    def held(self) -> list[K]:
        """The keys held, least recently used first."""
        with self._lock:
            return list(self._values)

    def values(self) -> list[V]:
        with self._lock:
            return [value for value, _ in self._values.values()]


class EngineCatalogue:
    """One S3T engine per base model, loaded on first use and sharing one artifact store, kept
    in an LRU bounded by ``UNLEARN_BASE_MODEL_CACHE_MB`` (a backbone's parameter and buffer
    bytes). Loading checks the base model's files against the digest the catalogue recorded,
    once per load: a folder whose weights changed is a :class:`BaseModelUnavailableError`
    (a failed job, a 503 prediction), never weights other than those registered.

    Build it lazily in the process that computes: loading starts CUDA when ``UNLEARN_DEVICE``
    picks a GPU (a pool child after its fork, never one that forks later)."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: ArtifactStore | None = None,
        limit_bytes: int | None = None,
    ) -> None:
        self.settings = settings
        self.store = store if store is not None else artifact_store(settings)
        limit = limit_bytes if limit_bytes is not None else settings.base_model_cache_mb << 20
        self._engines: SizedLru[tuple[str, str], S3TEngine] = SizedLru(
            limit, lambda engine: engine.backbone.memory_bytes
        )

    def engine(self, base: BaseModelKey) -> S3TEngine:
        """The engine of this base model, loaded (and its files verified) on first use."""
        return self._engines.get((base.name, base.sha256), lambda: self._load(base))

    def using(self, base: BaseModelKey) -> AbstractContextManager[S3TEngine]:
        """The engine, kept loaded while the block runs (a prediction beside other loads)."""
        return self._engines.pinned((base.name, base.sha256), lambda: self._load(base))

    @property
    def held_bytes(self) -> int:
        """Bytes of the base models held now (at most the limit, beyond those in use)."""
        return self._engines.held_bytes

    @property
    def loaded(self) -> list[str]:
        """Names of the base models held, least recently used first."""
        return [name for name, _ in self._engines.held()]

    def engines(self) -> list[S3TEngine]:
        return self._engines.values()

    def _load(self, base: BaseModelKey) -> S3TEngine:
        from service.base_models.service import local_folder

        try:
            folder = local_folder(base.uri, self.settings, base.sha256)
            verify(folder, base.sha256)
            backbone = load_backbone(
                folder, resolve_device(self.settings.device), self.settings.base_precision
            )
        except (BaseModelError, OSError, ValueError, BotoCoreError, ClientError) as error:
            raise BaseModelUnavailableError(
                f"base model {base.name!r} cannot be loaded: {error}", base_model=base.name
            ) from error
        log.info("loaded base model %s (%s) from %s", base.name, base.sha256, folder)
        return S3TEngine(backbone, self.store)


#: What a job runner computes with: the process's catalogue, or one engine (tests, benches).
Engines = EngineCatalogue | S3TEngine


def engine_for(engines: Engines, base: BaseModelKey) -> S3TEngine:
    """The engine a job on a model of ``base`` uses; a lone engine serves every base."""
    return engines if isinstance(engines, S3TEngine) else engines.engine(base)


def build_engine(settings: Settings) -> S3TEngine:
    """The engine of the default base model's folder, unchecked (benches and tools; the service
    uses :class:`EngineCatalogue`). Starts CUDA when ``UNLEARN_DEVICE`` picks a GPU."""
    backbone = load_backbone(
        settings.backbone_path, resolve_device(settings.device), settings.base_precision
    )
    return S3TEngine(backbone, artifact_store(settings))


def model_spec(model: Model, orders: Sequence[Sequence[int]]) -> ModelSpec:
    """The engine's view of a model: its stored S3T settings plus the lineage's own fields."""
    n_labels = len(model.labels or []) if model.task is Task.classification else 1
    config = S3TConfig.from_dict(
        {
            **model.config,
            "n_shards": model.n_shards,
            "n_slices": model.n_slices,
            "budget": model.budget,
            "task": model.task.value,
            "n_labels": n_labels,
        }
    )
    return ModelSpec(config, tuple(tuple(order) for order in orders))


def training_sample(
    model: Model, sample: Sample, payload: SamplePayload, shard: int, slice_: int
) -> TrainingSample:
    """The engine's view of a stored sample: its text or encoded image, and its class index or
    value; a causal LM's, its conversation (input and target at once)."""
    if model.task is Task.causal_lm:
        if payload.messages is None:
            raise LineageError(f"sample {sample.id} has no conversation; a causal LM needs one")
        conversation = Conversation(tuple((role, content) for role, content in payload.messages))
        return TrainingSample(sample.external_id, shard, slice_, conversation, 0.0)
    content = payload.image if payload.image is not None else payload.text
    if content is None:
        raise LineageError(f"sample {sample.id} has no text or image; the S3T engine needs one")
    target = payload.label_index if model.task is Task.classification else payload.target
    if target is None:
        raise LineageError(f"sample {sample.id} has no label")
    return TrainingSample(sample.external_id, shard, slice_, content, target)
