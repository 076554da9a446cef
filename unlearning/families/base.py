"""What the engine needs to know of an architecture family, and nothing else.

S3T slices a stack of blocks from the top; serving and every approximate method run a range of
those blocks and read the head's input. A :class:`Family` says, for one family of Hugging Face
models, how inputs become the tensors the embeddings take, how the embeddings run, which modules
are the blocks, what each block wants besides the hidden states (a mask, position embeddings),
what the head reads, and which linear modules LoRA adapts by default. The engine never touches an
architecture directly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

import torch
from torch import nn

from unlearning.families.chat import Conversation


class Modality(StrEnum):
    TEXT = "text"
    IMAGE = "image"


class UnsupportedArchitecture(ValueError):  # noqa: N818 - reads as what it is
    """The model's architecture has no family adapter (refused when the model is registered)."""


#: A sample's content: a text, the bytes of an encoded image (PNG, JPEG, ...), or the messages
#: of an instruction sample (causal language models).
Content = str | bytes | Conversation


@dataclass(frozen=True)
class Encoded:
    """Model inputs, one row per sample, with one shape per row: ``inputs`` are token ids
    (text) or pixel values (images); ``attention_mask`` marks the real positions of the sequence
    the blocks see (all ones for images)."""

    inputs: torch.Tensor
    attention_mask: torch.Tensor
    #: Causal language models: 1 where a token's prediction is in the loss (response tokens).
    loss_mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def rows(self, index: torch.Tensor) -> Encoded:
        loss_mask = None if self.loss_mask is None else self.loss_mask[index]
        return Encoded(self.inputs[index], self.attention_mask[index], loss_mask)

    def to(self, device: torch.device) -> Encoded:
        loss_mask = None if self.loss_mask is None else self.loss_mask.to(device)
        return Encoded(self.inputs.to(device), self.attention_mask.to(device), loss_mask)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states over the real (unpadded) tokens, as sentence-transformers do."""
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=-2) / weights.sum(dim=-2).clamp(min=1.0)


def child(model: nn.Module, *paths: str) -> Any:
    """The first of ``paths`` (dotted) that ``model`` has: module names move between
    transformers releases (ViT's ``encoder.layer`` became ``layers``)."""
    for path in paths:
        found: Any = model
        for part in path.split("."):
            found = getattr(found, part, None)
            if found is None:
                break
        if found is not None:
            return found
    raise UnsupportedArchitecture(
        f"{type(model).__name__} has none of the modules {', '.join(paths)}"
    )


class Family(ABC):
    """One architecture family. Stateless: every method takes the model it works on."""

    name: ClassVar[str]
    modality: ClassVar[Modality]
    #: ``config.model_type`` values this family serves.
    model_types: ClassVar[frozenset[str]]
    #: Whether the family is a causal language model (:class:`DecoderFamily`).
    causal: ClassVar[bool] = False
    #: The transformers auto class that loads the family's weights (a causal LM keeps its head).
    auto_model: ClassVar[str] = "AutoModel"
    #: LoRA's default target modules, matched by a module name's last component. Aliases of one
    #: projection across transformers releases may both be listed: a name no block has is ignored.
    default_targets: ClassVar[tuple[str, ...]]

    def check(self, config: Any) -> None:  # noqa: B027 - most families have no variant to refuse
        """Refuse variants of the family the adapter cannot slice (raise
        :class:`UnsupportedArchitecture`)."""

    @abstractmethod
    def blocks(self, model: nn.Module) -> nn.ModuleList:
        """The stack of blocks S3T slices, bottom first."""

    @abstractmethod
    def encode(
        self, processor: Any, config: Any, contents: Sequence[Content], max_length: int
    ) -> Encoded:
        """Inputs for ``contents`` on the CPU (the backbone moves them to its device):
        ``processor`` is the base model's tokenizer or image processor, ``config`` its config."""

    @abstractmethod
    def embed(self, model: nn.Module, encoded: Encoded) -> torch.Tensor:
        """The hidden states entering block 0."""

    def context(self, model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        """What the blocks need besides the hidden states, built once per run."""
        return None

    @abstractmethod
    def run_block(self, block: nn.Module, hidden: torch.Tensor, context: Any) -> torch.Tensor:
        """One block's output."""

    def pool(
        self, model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """What the task head reads: by default the mean of the last block's token states."""
        return mean_pool(hidden, attention_mask)


def require_text(contents: Sequence[Content], family: str) -> list[str]:
    texts = [c for c in contents if isinstance(c, str)]
    if len(texts) != len(contents):
        raise ValueError(f"a {family} model reads texts, not images or conversations")
    return texts


def tokenize(tokenizer: Any, contents: Sequence[Content], max_length: int, family: str) -> Encoded:
    """Token ids and attention mask, padded to ``max_length`` so every row has one shape."""
    texts = require_text(contents, family)
    if not texts:  # an empty shard or set: no row, the same width
        empty = torch.zeros((0, max_length), dtype=torch.long)
        return Encoded(empty, empty.clone())
    batch = tokenizer(
        texts,
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
        return_token_type_ids=False,
    )
    return Encoded(batch["input_ids"], batch["attention_mask"])
