"""Tiny random-weight BERT backbones (with MiniLM's tokenizer) for fast engine tests."""

from __future__ import annotations

from functools import cache

import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from unlearning.s3t import Backbone, default_backbone_path


@cache
def tiny_backbone(n_layers: int = 4, device: str = "cpu") -> Backbone:
    """The same random weights on every device (drawn on the CPU, then moved)."""
    tokenizer = AutoTokenizer.from_pretrained(default_backbone_path())
    torch.manual_seed(1234)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=n_layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    return Backbone(BertModel(config, add_pooling_layer=False), tokenizer, device)


#: Settings small enough to train in a second on CPU.
TINY_SETTINGS = {
    "lora_rank": 4,
    "epochs_per_stage": 2,
    "batch_size": 4,
    "max_length": 16,
    "learning_rate": 5e-3,
    "seed": 7,
}
