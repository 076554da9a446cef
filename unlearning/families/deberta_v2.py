"""DeBERTa-v2 and v3: disentangled attention. Every block takes the encoder's relative-position
embeddings and relative positions besides a pairwise mask, all built once per run from the
encoder's own helpers; the embeddings zero the padded positions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
from torch import nn

from unlearning.families.base import Encoded, UnsupportedArchitecture, child
from unlearning.families.bert import BertFamily


@dataclass(frozen=True)
class _Context:
    mask: torch.Tensor
    relative_pos: torch.Tensor | None
    rel_embeddings: torch.Tensor | None


class DebertaV2Family(BertFamily):
    name = "deberta-v2"
    model_types = frozenset({"deberta-v2"})
    default_targets: ClassVar[tuple[str, ...]] = ("query_proj", "value_proj")

    def check(self, config: Any) -> None:
        if getattr(config, "conv_kernel_size", 0) > 0:
            # The convolution mixes block 0's input into its output: block 0 would not be a
            # block like the others, so it could not be sliced.
            raise UnsupportedArchitecture(
                "DeBERTa-v2 with a convolution after the first layer (`conv_kernel_size` > 0) "
                "is not supported"
            )

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return cast(nn.ModuleList, child(model, "encoder.layer"))

    def embed(self, model: nn.Module, encoded: Encoded) -> torch.Tensor:
        out: torch.Tensor = cast(Any, model).embeddings(
            input_ids=encoded.inputs, mask=encoded.attention_mask
        )
        return out

    def context(self, model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        encoder = cast(Any, model).encoder
        return _Context(
            mask=encoder.get_attention_mask(attention_mask),
            relative_pos=encoder.get_rel_pos(hidden),
            rel_embeddings=encoder.get_rel_embedding(),
        )

    def run_block(self, block: nn.Module, hidden: torch.Tensor, context: Any) -> torch.Tensor:
        out, _ = block(
            hidden,
            context.mask,
            relative_pos=context.relative_pos,
            rel_embeddings=context.rel_embeddings,
        )
        return cast(torch.Tensor, out)
