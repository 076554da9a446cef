"""Architecture families: one small adapter per family of Hugging Face models (BERT, RoBERTa,
XLM-RoBERTa, DeBERTa-v2, DistilBERT, ModernBERT, ViT, DeiT; the decoders Llama, Mistral,
Qwen2/Qwen3 and GPT-2) behind the :class:`Family`
interface that the S3T engine, serving and the approximate methods use."""

from unlearning.families.base import (
    Content,
    Encoded,
    Family,
    Modality,
    UnsupportedArchitecture,
    mean_pool,
)
from unlearning.families.chat import Conversation
from unlearning.families.registry import FAMILIES, family_named, family_of

__all__ = [
    "FAMILIES",
    "Content",
    "Conversation",
    "Encoded",
    "Family",
    "Modality",
    "UnsupportedArchitecture",
    "family_named",
    "family_of",
    "mean_pool",
]
