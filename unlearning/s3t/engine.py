"""The S3T engine: what the service calls to train, invalidate, retrain and serve a model.

It holds no lineage state: the caller (the lineage database) says which prefixes are valid and
passes the artifact references back in; the engine only computes and stores weights.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from unlearning.artifacts import ArtifactStore
from unlearning.families import Content, Conversation
from unlearning.families.chat import eos_id
from unlearning.s3t.backbone import Backbone, Encoded
from unlearning.s3t.blocks import adapted_layers, stage_depths
from unlearning.s3t.config import S3TConfig, Task
from unlearning.s3t.data import CachedHiddenStates, LiveHiddenStates, ShardData, TrainingSample
from unlearning.s3t.ensemble import EnsemblePredictor, FrozenRows, ServedShard
from unlearning.s3t.generation import Generation, LmEnsemble, Sampling, StopText, prompt_ids
from unlearning.s3t.sequences import Order, plan_sequences
from unlearning.s3t.training import SequenceTrainer, StageResult
from unlearning.s3t.weights import StageWeights


class SequenceKey(NamedTuple):
    shard: int
    sequence: int


@dataclass(frozen=True)
class ModelSpec:
    """A model's settings and the slice orders every one of its shards trains."""

    config: S3TConfig
    orders: tuple[Order, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.orders) <= self.config.budget:
            raise ValueError(f"`orders` must hold 1..{self.config.budget} sequences")
        for order in self.orders:
            if sorted(order) != list(range(self.config.n_slices)):
                raise ValueError(f"order {order} is not a permutation of the slices")
        if len(set(self.orders)) != len(self.orders):
            raise ValueError("`orders` must not repeat an order")

    @classmethod
    def plan(cls, config: S3TConfig) -> ModelSpec:
        return cls(config, tuple(plan_sequences(config)))


@dataclass(frozen=True)
class TrainedLayer:
    """One trained (sequence, stage): a layer row of the lineage database."""

    shard: int
    sequence: int
    stage: int
    slices: tuple[int, ...]  # the slices it was trained on, in order
    sample_count: int
    sample_steps: int
    artifact: str


@dataclass(frozen=True)
class Generated:
    text: str
    token_ids: tuple[int, ...]
    finish_reason: str  # "eos", "stop" (a stop string) or "length"


@dataclass(frozen=True)
class Prediction:
    outputs: torch.Tensor  # [rows, n_labels] mean logits, or [rows] regression values
    shards: tuple[int, ...]  # the shards that answered

    @property
    def labels(self) -> torch.Tensor:
        return self.outputs.argmax(dim=-1)


class S3TEngine:
    """Train, retrain and serve S3T models on one frozen backbone and one artifact store."""

    def __init__(
        self,
        backbone: Backbone,
        store: ArtifactStore,
        *,
        cache_hidden_states: bool = True,
        loaded_stages: int = 512,
    ) -> None:
        self.backbone = backbone
        self.store = store
        self.cache_hidden_states = cache_hidden_states
        self._loaded: OrderedDict[str, StageWeights] = OrderedDict()
        self._loaded_limit = loaded_stages
        self._predictors: dict[tuple[str, ...], EnsemblePredictor] = {}

    def with_store(self, store: ArtifactStore) -> S3TEngine:
        """The same backbone and settings writing to another store (e.g. a scratch folder)."""
        return S3TEngine(
            self.backbone,
            store,
            cache_hidden_states=self.cache_hidden_states,
            loaded_stages=self._loaded_limit,
        )

    def train(self, spec: ModelSpec, samples: Sequence[TrainingSample]) -> list[TrainedLayer]:
        """Train every sequence of every shard from scratch."""
        self._check_samples(spec.config, samples)
        layers: list[TrainedLayer] = []
        for shard in range(spec.config.n_shards):
            data, hidden = self._shard_data(spec, [s for s in samples if s.shard == shard])
            for sequence, order in enumerate(spec.orders):
                results = SequenceTrainer(self.backbone, spec.config).train(
                    data, hidden, shard=shard, sequence=sequence, order=order
                )
                layers.extend(self._store(shard, sequence, results))
        return layers

    @staticmethod
    def affected_stages(
        spec: ModelSpec, deleted: Iterable[tuple[int, int]]
    ) -> dict[SequenceKey, int]:
        """For deleted samples' (shard, slice), each touched sequence's first invalid stage."""
        first: dict[SequenceKey, int] = {}
        for shard, slice_ in set(deleted):
            if not (0 <= shard < spec.config.n_shards and 0 <= slice_ < spec.config.n_slices):
                raise ValueError(f"no shard {shard} / slice {slice_} in this model")
            for sequence, order in enumerate(spec.orders):
                key = SequenceKey(shard, sequence)
                stage = order.index(slice_) + 1
                first[key] = min(stage, first.get(key, stage))
        return dict(sorted(first.items()))

    def retrain(
        self,
        spec: ModelSpec,
        key: SequenceKey,
        from_stage: int,
        samples: Sequence[TrainingSample],
        prefix: Sequence[str],
        on_stage: Callable[[int], None] | None = None,
    ) -> list[TrainedLayer]:
        """Re-run stages ``from_stage..L`` of one sequence from its saved valid prefix.

        ``samples`` are the shard's remaining samples (all its slices); ``prefix`` the artifact
        references of stages ``1..from_stage-1``; ``on_stage(stage)`` reports progress.
        """
        self._check_samples(spec.config, samples)
        if any(s.shard != key.shard for s in samples):
            raise ValueError(f"retraining shard {key.shard} was given samples of another shard")
        if not 0 <= key.sequence < len(spec.orders):
            raise ValueError(f"no sequence {key.sequence} in this model")
        data, hidden = self._shard_data(spec, samples)
        results = SequenceTrainer(self.backbone, spec.config).train(
            data,
            hidden,
            shard=key.shard,
            sequence=key.sequence,
            order=spec.orders[key.sequence],
            start_stage=from_stage,
            prefix=[self.load_stage(ref) for ref in prefix],
            on_stage=on_stage,
        )
        return self._store(key.shard, key.sequence, results)

    def predict(
        self,
        config: S3TConfig,
        contents: Sequence[Content],
        prefixes: Mapping[int, Sequence[str]],
        *,
        batched: bool = True,
    ) -> Prediction:
        """Mean of the live shards' outputs; ``prefixes`` maps each live shard to the artifact
        references of its served prefix (stages 1..k of one sequence). Shards left out are dead."""
        if config.task == Task.CAUSAL_LM:
            raise ValueError("a causal LM scores and generates; it does not predict")
        return self._predict(
            config,
            self.backbone.encode(list(contents), config.max_length),
            prefixes,
            batched=batched,
        )

    def frozen_rows(self, config: S3TConfig, contents: Sequence[Content]) -> FrozenRows:
        """``contents`` encoded, with the backbone's states entering the lowest layer any stage
        of ``config`` adapts: for :meth:`predict_frozen`, again and again."""
        if config.task == Task.CAUSAL_LM:
            raise ValueError("a causal LM scores and generates; it does not predict")
        encoded = self.backbone.encode(list(contents), config.max_length)
        depth = min(adapted_layers(self.backbone.n_layers, config.n_slices))
        return self._predictor(config).frozen_rows(encoded, depth)

    def predict_frozen(
        self, config: S3TConfig, frozen: FrozenRows, prefixes: Mapping[int, Sequence[str]]
    ) -> Prediction:
        """:meth:`predict` on rows of :meth:`frozen_rows`: the same outputs, bitwise, without
        encoding them or running their frozen bottom again."""
        return self._predict(config, frozen.encoded, prefixes, frozen=frozen)

    def _predict(
        self,
        config: S3TConfig,
        encoded: Encoded,
        prefixes: Mapping[int, Sequence[str]],
        *,
        batched: bool = True,
        frozen: FrozenRows | None = None,
    ) -> Prediction:
        live, served = self._served(prefixes)
        outputs = self._predictor(config).shard_outputs(
            encoded, served, batched=batched, frozen=frozen
        )
        outputs = outputs.mean(dim=0)
        if config.task == Task.REGRESSION:
            outputs = outputs.squeeze(-1)
        return Prediction(outputs, tuple(live))

    def lm(self, config: S3TConfig, prefixes: Mapping[int, Sequence[str]]) -> LmEnsemble:
        """A causal LM's live shards (same ``prefixes`` as :meth:`predict`), ready to score
        completions or start a :class:`Generation`."""
        if config.task != Task.CAUSAL_LM:
            raise ValueError(f"a {config.task} model predicts; it does not generate")
        _, served = self._served(prefixes)
        return LmEnsemble(self.backbone, self._predictor(config), served)

    def generate(
        self,
        config: S3TConfig,
        prefixes: Mapping[int, Sequence[str]],
        prompt: Conversation | str,
        *,
        max_new_tokens: int = 32,
        sampling: Sampling | None = None,
        stop: Sequence[str] = (),
    ) -> Generated:
        """Generate a completion in one go (the service streams :class:`Generation` itself)."""
        tokenizer = self.backbone.processor
        generation = Generation(
            self.lm(config, prefixes), prompt_ids(tokenizer, prompt), sampling or Sampling()
        )
        text = StopText(tokenizer, tuple(stop))
        eos = eos_id(tokenizer)
        reason = "length"
        while len(generation.generated) < max_new_tokens:
            token = generation.accept()
            if token == eos:
                reason = "eos"
                break
            text.piece(generation.generated)
            if text.stopped:
                reason = "stop"
                break
        text.flush(generation.generated)
        return Generated(text.emitted, tuple(generation.generated), reason)

    def _served(self, prefixes: Mapping[int, Sequence[str]]) -> tuple[list[int], list[ServedShard]]:
        live = sorted(shard for shard, refs in prefixes.items() if refs)
        if not live:
            raise ValueError("no live shard: every shard's sequences are invalidated")
        return live, [
            ServedShard.from_prefix([self.load_stage(r) for r in prefixes[s]]) for s in live
        ]

    def _predictor(self, config: S3TConfig) -> EnsemblePredictor:
        predictor = self._predictors.get(config.target_modules)
        if predictor is None:
            predictor = EnsemblePredictor(self.backbone, config.target_modules)
            self._predictors[config.target_modules] = predictor
        return predictor

    def load_stage(self, ref: str) -> StageWeights:
        """A stage's weights, from the LRU cache or the store (ArtifactNotFoundError when the
        store no longer holds it)."""
        weights = self._loaded.get(ref)
        if weights is None:
            weights = StageWeights.from_bytes(self.store.get(ref)).to(self.backbone.device)
            self._loaded[ref] = weights
            while len(self._loaded) > self._loaded_limit:
                self._loaded.popitem(last=False)
        else:
            self._loaded.move_to_end(ref)
        return weights

    @property
    def loaded_stages(self) -> tuple[str, ...]:
        """The references of the stages held in memory, least recently used first."""
        return tuple(self._loaded)

    def evict_stages(self, refs: Iterable[str]) -> int:
        """Drop these stages from memory (collected, or served no more); returns how many were
        held. A caller that still holds one keeps its tensors until it lets go."""
        return sum(self._loaded.pop(ref, None) is not None for ref in set(refs))

    def _shard_data(
        self, spec: ModelSpec, samples: Sequence[TrainingSample]
    ) -> tuple[ShardData, CachedHiddenStates | LiveHiddenStates]:
        cfg = spec.config
        data = ShardData.build(self.backbone, cfg, samples)
        if not self.cache_hidden_states:
            return data, LiveHiddenStates(self.backbone, data.encoded)
        depths = stage_depths(cfg.schedule, self.backbone.n_layers, cfg.n_slices)
        return data, CachedHiddenStates(self.backbone, data.encoded, depths)

    def _store(self, shard: int, sequence: int, results: list[StageResult]) -> list[TrainedLayer]:
        return [
            TrainedLayer(
                shard=shard,
                sequence=sequence,
                stage=result.stage,
                slices=result.slices,
                sample_count=len(result.sample_ids),
                sample_steps=result.sample_steps,
                artifact=self.store.put(result.weights.to_bytes()),
            )
            for result in results
        ]

    def _check_samples(self, config: S3TConfig, samples: Sequence[TrainingSample]) -> None:
        if (config.task == Task.CAUSAL_LM) != self.backbone.causal:
            raise ValueError(
                f"a {config.task} model cannot be trained on a {self.backbone.family.name} base "
                "model: causal_lm needs a decoder, and a decoder serves causal_lm only"
            )
        for sample in samples:
            if not (0 <= sample.shard < config.n_shards and 0 <= sample.slice < config.n_slices):
                raise ValueError(
                    f"sample {sample.id!r} is placed in shard {sample.shard} / slice "
                    f"{sample.slice}, outside this model"
                )
