"""One stage's trained weights: its LoRA matrices and its task head, as safetensors bytes."""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

FORMAT = "s3t-stage/1"


@dataclass(frozen=True)
class LoraPair:
    """``delta(x) = (x @ A.T) @ B.T * scaling`` on one target module of one layer."""

    a: torch.Tensor  # [rank, in_features]
    b: torch.Tensor  # [out_features, rank]


@dataclass(frozen=True)
class StageWeights:
    """What a (sequence, stage) layer row points at: adapters keyed by (layer, module) + head."""

    adapters: dict[tuple[int, str], LoraPair]
    head_weight: torch.Tensor  # [outputs, hidden]
    head_bias: torch.Tensor  # [outputs]
    scaling: float

    def to(self, device: torch.device) -> StageWeights:
        """The same weights on ``device`` (itself when they are there already)."""
        if self.head_weight.device == device:
            return self
        return StageWeights(
            adapters={
                key: LoraPair(pair.a.to(device), pair.b.to(device))
                for key, pair in self.adapters.items()
            },
            head_weight=self.head_weight.to(device),
            head_bias=self.head_bias.to(device),
            scaling=self.scaling,
        )

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted({layer for layer, _ in self.adapters}))

    def to_bytes(self) -> bytes:
        """Device-independent bytes: the same weights give the same bytes from any device."""
        tensors = {"head.weight": self.head_weight, "head.bias": self.head_bias}
        for (layer, module), pair in sorted(self.adapters.items()):
            tensors[f"layer.{layer}.{module}.lora_A"] = pair.a
            tensors[f"layer.{layer}.{module}.lora_B"] = pair.b
        tensors = {key: value.detach().contiguous().cpu() for key, value in tensors.items()}
        # One metadata key: safetensors writes a map's keys in no fixed order, and the bytes of
        # an artifact must be a function of its weights alone (its name is their hash).
        metadata = {"s3t": json.dumps({"format": FORMAT, "scaling": self.scaling})}
        return bytes(save_safetensors(tensors, metadata=metadata))

    @classmethod
    def from_bytes(cls, data: bytes) -> StageWeights:
        tensors = load_safetensors(data)
        metadata = json.loads(_metadata(data).get("s3t", "{}"))
        if metadata.get("format") != FORMAT:
            raise ValueError(f"not an S3T stage artifact (format {metadata.get('format')!r})")
        adapters: dict[tuple[int, str], LoraPair] = {}
        for key in tensors:
            if key.endswith(".lora_A"):  # layer.<i>.<adapter key, may hold dots>.lora_A
                _, layer, rest = key.split(".", 2)
                module = rest.removesuffix(".lora_A")
                adapters[(int(layer), module)] = LoraPair(
                    tensors[key], tensors[key.removesuffix("A") + "B"]
                )
        return cls(
            adapters=adapters,
            head_weight=tensors["head.weight"],
            head_bias=tensors["head.bias"],
            scaling=float(metadata["scaling"]),
        )


def _metadata(data: bytes) -> dict[str, str]:
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    metadata: dict[str, str] = header.get("__metadata__", {})
    return metadata
