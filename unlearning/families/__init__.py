"""Architecture families: one small adapter per family of Hugging Face models (BERT, RoBERTa,
XLM-RoBERTa, DeBERTa-v2, DistilBERT, ModernBERT, ViT, DeiT) behind the :class:`Family`
interface that the S3T engine, serving and the approximate methods use."""

from unlearning.families.base import (
    Content,
    Encoded,
    Family,
    Modality,
    UnsupportedArchitecture,
    mean_pool,
)
from unlearning.families.registry import FAMILIES, family_named, family_of

__all__ = [
    "FAMILIES",
    "Content",
    "Encoded",
    "Family",
    "Modality",
    "UnsupportedArchitecture",
    "family_named",
    "family_of",
    "mean_pool",
]
