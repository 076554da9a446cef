"""Vision transformers (ViT, DeiT): patches in, the class token out.

An image sample is the bytes of an encoded image (PNG, JPEG, ...). It is decoded here and
preprocessed by the base model's own image processor (resize to its grid, rescale, normalise),
so serving, training and every approximate pass see the same pixels. The blocks take no mask
(every patch is real); the head reads the class token after the final layer norm, as
``ViTForImageClassification`` does.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, ClassVar, cast

import torch
from torch import nn

from unlearning.families.base import Content, Encoded, Family, Modality, child


def decode_image(content: Content) -> Any:
    """An RGB PIL image from encoded bytes (ValueError for anything else)."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(content, bytes):
        raise ValueError("an image model reads images (encoded bytes), not texts")
    try:
        with Image.open(io.BytesIO(content)) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable image: {exc}") from exc


class VitFamily(Family):
    name = "vit"
    modality = Modality.IMAGE
    model_types = frozenset({"vit"})
    #: ``query``/``value`` up to transformers 5.2x, ``q_proj``/``v_proj`` since.
    default_targets: ClassVar[tuple[str, ...]] = ("query", "value", "q_proj", "v_proj")
    #: Tokens before the patches: the class token (DeiT adds a distillation token).
    special_tokens = 1

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return cast(nn.ModuleList, child(model, "encoder.layer", "layers"))

    def sequence_length(self, config: Any) -> int:
        image_size, patch_size = config.image_size, config.patch_size
        return int((image_size // patch_size) ** 2 + self.special_tokens)

    def encode(
        self, processor: Any, config: Any, contents: Sequence[Content], max_length: int
    ) -> Encoded:
        size = int(config.image_size)
        tokens = self.sequence_length(config)
        if not contents:
            pixels = torch.zeros((0, int(config.num_channels), size, size))
        else:
            images = [decode_image(content) for content in contents]
            pixels = processor(images=images, return_tensors="pt")["pixel_values"].float()
        return Encoded(pixels, torch.ones((len(pixels), tokens), dtype=torch.long))

    def embed(self, model: nn.Module, encoded: Encoded) -> torch.Tensor:
        out: torch.Tensor = cast(Any, model).embeddings(encoded.inputs)
        return out

    def run_block(self, block: nn.Module, hidden: torch.Tensor, context: Any) -> torch.Tensor:
        out = block(hidden)
        return cast(torch.Tensor, out[0] if isinstance(out, tuple) else out)

    def pool(
        self, model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        normed: torch.Tensor = cast(Any, model).layernorm(hidden)
        return normed[:, 0]


class DeitFamily(VitFamily):
    name = "deit"
    model_types = frozenset({"deit"})
    special_tokens = 2
