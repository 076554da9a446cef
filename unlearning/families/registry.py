"""Which family adapter serves a model: by its config's ``model_type``."""

from __future__ import annotations

from typing import Any

from unlearning.families.base import Family, UnsupportedArchitecture
from unlearning.families.bert import BertFamily, RobertaFamily, XlmRobertaFamily
from unlearning.families.deberta_v2 import DebertaV2Family
from unlearning.families.decoder import DecoderFamily, Gpt2Family, MistralFamily, Qwen2Family
from unlearning.families.distilbert import DistilBertFamily
from unlearning.families.modernbert import ModernBertFamily
from unlearning.families.vit import DeitFamily, VitFamily

FAMILIES: tuple[Family, ...] = (
    BertFamily(),
    RobertaFamily(),
    XlmRobertaFamily(),
    DebertaV2Family(),
    DistilBertFamily(),
    ModernBertFamily(),
    VitFamily(),
    DeitFamily(),
    DecoderFamily(),
    MistralFamily(),
    Qwen2Family(),
    Gpt2Family(),
)
_BY_TYPE = {model_type: family for family in FAMILIES for model_type in family.model_types}


def family_of(config: Any) -> Family:
    """The family of a Hugging Face config; :class:`UnsupportedArchitecture` says why not."""
    model_type = getattr(config, "model_type", None)
    family = _BY_TYPE.get(str(model_type))
    if family is None:
        known = ", ".join(sorted(_BY_TYPE))
        raise UnsupportedArchitecture(
            f"architecture {model_type!r} is not supported; supported model types: {known}"
        )
    family.check(config)
    return family


def family_named(name: str) -> Family:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise UnsupportedArchitecture(f"no family named {name!r}")
