"""Each family adapter runs the model block by block exactly as the model's own forward does,
and unsupported architectures are refused by name."""

from __future__ import annotations

import pytest
import torch
import transformers

from tests.unit.families.conftest import ALL_FAMILIES
from unlearning.families import Modality, UnsupportedArchitecture, family_of
from unlearning.families.testing import IMAGE_FAMILIES, digit_images
from unlearning.s3t import Backbone

TEXTS = ["stocks rise on bank profit", "the team won the cup", "a new chip for laptops"]


def contents(backbone: Backbone) -> list[str | bytes]:
    if backbone.modality == Modality.IMAGE:
        return [image for image, _ in digit_images(3)]
    return list(TEXTS)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_blockwise_run_equals_the_models_own_forward(
    backbones: dict[str, Backbone], family: str
) -> None:
    backbone = backbones[family]
    assert backbone.family.name == family
    encoded = backbone.encode(contents(backbone), 16)
    mine = backbone.hidden_at(encoded, backbone.n_layers)
    # Split anywhere: running 0..k then k..L is the same as 0..L (what the frozen-bottom cache
    # and the batched ensemble rely on).
    split = backbone.run(
        backbone.hidden_at(encoded, 1), encoded.attention_mask, 1, backbone.n_layers
    )
    assert torch.equal(mine, split)
    with torch.no_grad():
        if family in IMAGE_FAMILIES:
            theirs = backbone.model(pixel_values=encoded.inputs).last_hidden_state
            mine = backbone.model.layernorm(mine)
        else:
            theirs = backbone.model(
                input_ids=encoded.inputs, attention_mask=encoded.attention_mask
            ).last_hidden_state
            if family == "modernbert":
                mine = backbone.model.final_norm(mine)
    real = encoded.attention_mask.bool()
    assert torch.allclose(mine[real], theirs[real], atol=1e-5)
    assert backbone.pool(mine, encoded.attention_mask).shape == (3, backbone.hidden_size)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_default_targets_adapt_every_block(backbones: dict[str, Backbone], family: str) -> None:
    backbone = backbones[family]
    for block in backbone.layers:
        names = {
            path.rsplit(".", 1)[-1]
            for path, module in block.named_modules()
            if isinstance(module, torch.nn.Linear)
        }
        assert names & set(backbone.family.default_targets), family


def test_unsupported_architectures_are_refused_by_name() -> None:
    with pytest.raises(UnsupportedArchitecture, match=r"'t5' is not supported.*bert"):
        family_of(transformers.T5Config())
    conv = transformers.DebertaV2Config()
    conv.conv_kernel_size = 3
    with pytest.raises(UnsupportedArchitecture, match="convolution"):
        family_of(conv)


def test_an_image_model_refuses_text_and_a_text_model_refuses_images(
    backbones: dict[str, Backbone],
) -> None:
    with pytest.raises(ValueError, match="reads images"):
        backbones["vit"].encode(["a text"], 16)
    with pytest.raises(ValueError, match="reads texts"):
        backbones["bert"].encode([b"\x89PNG"], 16)
    with pytest.raises(ValueError, match="not a readable image"):
        backbones["vit"].encode([b"not an image"], 16)
