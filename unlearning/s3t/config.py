"""S3T model settings: one frozen dataclass, validated on construction."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Task(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    #: Instruction tuning of a decoder: next-token cross-entropy on the response tokens.
    CAUSAL_LM = "causal_lm"


class SequenceStrategy(StrEnum):
    """How a shard's slice orders are chosen (paper Alg. 1 and Alg. 2)."""

    CYCLIC = "cyclic"
    BIPARTITE = "bipartite"


class Schedule(StrEnum):
    """Which layers a stage trains.

    ``s3t``: stage i trains the LoRA adapters of block i only (blocks counted from the top).
    ``sisa``: every stage continues training the adapters of every adapted layer, so a stage's
    checkpoint replaces the previous one (SISA's incremental slice checkpoints; with one shard and
    one slice it is plain full LoRA fine-tuning).
    """

    S3T = "s3t"
    SISA = "sisa"


def _check_enum(name: str, value: object, enum: type[StrEnum]) -> None:
    if value not in {member.value for member in enum}:
        choices = ", ".join(repr(member.value) for member in enum)
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}")


@dataclass(frozen=True)
class S3TConfig:
    """Settings of one S3T model.

    Args:
        n_shards: disjoint data shards ``m``; each trains its own models.
        n_slices: disjoint slices per shard ``L``; also the number of layer blocks and stages.
        budget: slice sequences trained per shard ``B``.
        sequence_strategy: ``cyclic`` rotations or ``bipartite`` matching on ``deletion_prior``.
        deletion_prior: per-slice deletion probabilities for ``bipartite`` (uniform when unset).
        schedule: ``s3t`` (one block per stage) or ``sisa`` (every adapted layer at every stage).
        task: ``classification`` (cross-entropy over ``n_labels``), ``regression`` (MSE), or
            ``causal_lm`` (next-token cross-entropy on response tokens; a decoder base model,
            whose frozen language-model head replaces the trained task head).
        n_labels: classes of a classification task; must be 1 for regression and causal_lm.
        lora_rank, lora_alpha, lora_dropout, target_modules: the LoRA adapters (peft semantics;
            target modules are matched by the last component of a module's name).
        use_rslora: rank-stabilised LoRA (scaling ``lora_alpha / sqrt(lora_rank)`` instead of
            ``lora_alpha / lora_rank``), as the S3T paper's LLM runs use.
        epochs_per_stage, learning_rate, batch_size: the optimiser (AdamW) of every stage.
        max_length: texts are truncated and padded to this many tokens.
        seed: the model seed; every stage's seed derives from it.
        gradient_penalty: IAU's training-time gradient restriction, the weight of the sum of the
            per-tensor gradient norms added to each batch loss (0 = off; 0.005 in IAU's code);
            it makes a later IAU unlearning step more accurate at the price of double backprop.
        gradient_checkpointing: keep only each trained block's input during a step and
            recompute its activations in backward (less memory for long sequences and large
            bases, about a third more compute); the weights it trains are bitwise the same.
    """

    n_shards: int = 4
    n_slices: int = 4
    budget: int = 4
    sequence_strategy: SequenceStrategy = SequenceStrategy.CYCLIC
    deletion_prior: tuple[float, ...] | None = None
    schedule: Schedule = Schedule.S3T
    task: Task = Task.CLASSIFICATION
    n_labels: int = 2
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = field(default=("query", "value"))
    use_rslora: bool = False
    epochs_per_stage: int = 2
    learning_rate: float = 1e-3
    batch_size: int = 32
    max_length: int = 64
    seed: int = 0
    gradient_penalty: float = 0.0
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        for name in ("n_shards", "n_slices", "budget", "lora_rank", "epochs_per_stage"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}")
        for name in ("batch_size", "max_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 2:
                raise ValueError(f"`{name}` must be an integer >= 2, got {value!r}")
        _check_enum("sequence_strategy", self.sequence_strategy, SequenceStrategy)
        _check_enum("schedule", self.schedule, Schedule)
        _check_enum("task", self.task, Task)
        if self.task == Task.CLASSIFICATION and self.n_labels < 2:
            raise ValueError(f"`n_labels` must be >= 2 for classification, got {self.n_labels}")
        if self.task != Task.CLASSIFICATION and self.n_labels != 1:
            raise ValueError(f"`n_labels` must be 1 for {self.task}, got {self.n_labels}")
        if not (self.lora_alpha > 0 and math.isfinite(self.lora_alpha)):
            raise ValueError(f"`lora_alpha` must be a positive number, got {self.lora_alpha}")
        if not isinstance(self.use_rslora, bool):
            raise ValueError(f"`use_rslora` must be true or false, got {self.use_rslora!r}")
        if not 0.0 <= self.gradient_penalty <= 1.0:
            raise ValueError(f"`gradient_penalty` must be in [0, 1], got {self.gradient_penalty}")
        checkpointing = self.gradient_checkpointing
        if not isinstance(checkpointing, bool):
            raise ValueError(
                f"`gradient_checkpointing` must be true or false, got {checkpointing!r}"
            )
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"`lora_dropout` must be in [0, 1), got {self.lora_dropout}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"`learning_rate` must be a positive number, got {self.learning_rate}")
        if not self.target_modules or not all(
            isinstance(name, str) and name for name in self.target_modules
        ):
            raise ValueError("`target_modules` must be a non-empty tuple of module names")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ValueError(f"`seed` must be an integer in [0, 2**63), got {self.seed!r}")
        if self.deletion_prior is not None:
            self._check_prior(self.deletion_prior)

    def _check_prior(self, prior: tuple[float, ...]) -> None:
        if self.sequence_strategy != SequenceStrategy.BIPARTITE:
            raise ValueError("`deletion_prior` is only used by the 'bipartite' sequence strategy")
        if len(prior) != self.n_slices:
            raise ValueError(f"`deletion_prior` needs one value per slice ({self.n_slices})")
        if any(not (p >= 0.0 and math.isfinite(p)) for p in prior) or not math.isclose(
            sum(prior), 1.0, abs_tol=1e-6
        ):
            raise ValueError("`deletion_prior` must be non-negative and sum to 1")

    @property
    def output_dim(self) -> int:
        """Outputs of the trained head: none for a causal LM (its vocabulary head is frozen)."""
        return 0 if self.task == Task.CAUSAL_LM else self.n_labels

    @property
    def lora_scaling(self) -> float:
        if self.use_rslora:
            return self.lora_alpha / math.sqrt(self.lora_rank)
        return self.lora_alpha / self.lora_rank

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists), the inverse of :meth:`from_dict`.
        ``gradient_checkpointing`` appears only when on, so the stored settings of every model
        that does not use it read as they did before it existed."""
        data = dataclasses.asdict(self)
        if not self.gradient_checkpointing:
            del data["gradient_checkpointing"]
        data["target_modules"] = list(self.target_modules)
        if self.deletion_prior is not None:
            data["deletion_prior"] = list(self.deletion_prior)
        return {
            key: str(value) if isinstance(value, StrEnum) else value for key, value in data.items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> S3TConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown S3T settings: {', '.join(unknown)}")
        values = dict(data)
        if "target_modules" in values:
            values["target_modules"] = tuple(values["target_modules"])
        if values.get("deletion_prior") is not None:
            values["deletion_prior"] = tuple(float(p) for p in values["deletion_prior"])
        for name, enum in (
            ("sequence_strategy", SequenceStrategy),
            ("schedule", Schedule),
            ("task", Task),
        ):
            if name in values:
                _check_enum(name, values[name], enum)
                values[name] = enum(values[name])
        return cls(**values)
