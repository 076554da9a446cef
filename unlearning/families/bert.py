"""BERT and the encoders built like it (RoBERTa, XLM-RoBERTa): ``embeddings(input_ids=...)``,
``encoder.layer``, a bidirectional mask, mean pooling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, cast

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

from unlearning.families.base import Content, Encoded, Family, Modality, child, tokenize


class BertFamily(Family):
    name = "bert"
    modality = Modality.TEXT
    model_types = frozenset({"bert"})
    default_targets: ClassVar[tuple[str, ...]] = ("query", "value")

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return cast(nn.ModuleList, child(model, "encoder.layer", "layers"))

    def encode(
        self, processor: Any, config: Any, contents: Sequence[Content], max_length: int
    ) -> Encoded:
        return tokenize(processor, contents, max_length, self.name)

    def embed(self, model: nn.Module, encoded: Encoded) -> torch.Tensor:
        out: torch.Tensor = cast(Any, model).embeddings(input_ids=encoded.inputs)
        return out

    def context(self, model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        return create_bidirectional_mask(
            config=cast(Any, model).config, inputs_embeds=hidden, attention_mask=attention_mask
        )

    def run_block(self, block: nn.Module, hidden: torch.Tensor, context: Any) -> torch.Tensor:
        out: torch.Tensor = block(hidden, attention_mask=context)
        return out


class RobertaFamily(BertFamily):
    name = "roberta"
    model_types = frozenset({"roberta"})


class XlmRobertaFamily(BertFamily):
    name = "xlm-roberta"
    model_types = frozenset({"xlm-roberta"})
