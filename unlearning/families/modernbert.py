"""ModernBERT: rotary position embeddings and alternating global and sliding-window attention
(each block says which by ``attention_type``); a final norm before the pooling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
from torch import nn
from transformers.masking_utils import (
    create_bidirectional_mask,
    create_bidirectional_sliding_window_mask,
)

from unlearning.families.base import child, mean_pool
from unlearning.families.bert import BertFamily


@dataclass(frozen=True)
class _Context:
    masks: dict[str, Any]
    positions: dict[str, Any]


class ModernBertFamily(BertFamily):
    name = "modernbert"
    model_types = frozenset({"modernbert"})
    default_targets: ClassVar[tuple[str, ...]] = ("Wqkv",)

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return cast(nn.ModuleList, child(model, "layers"))

    def context(self, model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        core = cast(Any, model)
        kwargs = {"config": core.config, "inputs_embeds": hidden, "attention_mask": attention_mask}
        position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        return _Context(
            masks={
                "full_attention": create_bidirectional_mask(**kwargs),
                "sliding_attention": create_bidirectional_sliding_window_mask(**kwargs),
            },
            positions={
                kind: core.rotary_emb(hidden, position_ids, kind)
                for kind in set(core.config.layer_types)
            },
        )

    def run_block(self, block: nn.Module, hidden: torch.Tensor, context: Any) -> torch.Tensor:
        kind = cast(Any, block).attention_type
        out: torch.Tensor = block(
            hidden, attention_mask=context.masks[kind], position_embeddings=context.positions[kind]
        )
        return out

    def pool(
        self, model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        return mean_pool(cast(Any, model).final_norm(hidden), attention_mask)
