"""DistilBERT: ``embeddings(input_ids)``, ``transformer.layer``, ``q_lin``/``v_lin``."""

from __future__ import annotations

from typing import Any, ClassVar, cast

from torch import nn

from unlearning.families.base import child
from unlearning.families.bert import BertFamily


class DistilBertFamily(BertFamily):
    name = "distilbert"
    model_types = frozenset({"distilbert"})
    default_targets: ClassVar[tuple[str, ...]] = ("q_lin", "v_lin")

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return cast(nn.ModuleList, child(model, "transformer.layer", "layers"))

    def embed(self, model: nn.Module, encoded: Any) -> Any:
        return cast(Any, model).embeddings(encoded.inputs)
