"""Response bodies of the base-model catalogue (``GET /base-models``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from service.db.models import BaseModel as BaseModelRow


class BaseModelPublic(BaseModel):
    """A registered base model. Its location (a folder or object-store prefix of the
    deployment) is the operators' business and not shown; its digest names its weights."""

    name: str
    family: str = Field(description="The architecture family (`bert`, `roberta`, `vit`, ...).")
    modality: str = Field(description="What its models read: `text` or `image`.")
    sha256: str = Field(description="SHA-256 of its weight files and config, checked at load.")
    n_layers: int = Field(description="Its blocks: a model's `n_slices` may not exceed this.")
    hidden_size: int
    default_targets: list[str] = Field(
        description="The modules LoRA adapts when a model names no `target_modules`."
    )
    default: bool = Field(description="Whether a model that names no `base_model` gets it.")
    created_at: datetime


class BaseModelRef(BaseModel):
    """The base model a model fine-tunes, as its model, certificates and audits name it: the
    digest pins the exact frozen weights its adapters were trained on."""

    name: str
    family: str
    modality: str
    sha256: str

    @classmethod
    def of(cls, base: BaseModelRow) -> BaseModelRef:
        return cls(
            name=base.name, family=base.family, modality=base.modality.value, sha256=base.sha256
        )


class BaseModelList(BaseModel):
    items: list[BaseModelPublic]
