"""Base models as files: what a registered base model is (its family, size and weights' digest),
read offline from a Hugging Face folder, and the check that the folder still holds those weights.

Exactness is bitwise: a retrain equals a fresh training only on the same frozen weights. So a
base model is named by the SHA-256 of its weight files (:func:`weights_digest`), recorded when
an operator registers it and checked each time a process loads it (:func:`verify`); a folder
whose weights changed is refused (:class:`BaseModelChanged`) instead of silently serving and
retraining on other weights. An ``s3://bucket/prefix`` base model is downloaded once into a
local folder named by that digest (:func:`download_s3`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from unlearning.families import UnsupportedArchitecture, family_of

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: The files the digest covers: what ``from_pretrained`` reads as weights, the config that says
#: how they are wired, and the tokenizer's or image processor's files, which decide what inputs
#: the weights see (another vocabulary or normalisation is another model as much as other
#: weights). Only the folder's top level: that is what the model loads.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
CONFIG_FILE = "config.json"
PREPROCESSING_FILES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
        "spm.model",
        "sentencepiece.bpe.model",
        "tokenizer.model",
        "preprocessor_config.json",
    }
)
_CHUNK = 1 << 20


class BaseModelError(ValueError):
    """A base model folder that cannot be registered or loaded."""


class BaseModelChanged(BaseModelError):  # noqa: N818 (the name the catalogue documents)
    """The folder's weight files are not the ones registered: their digest differs."""


__all__ = [
    "BaseModelChanged",
    "BaseModelError",
    "Description",
    "UnsupportedArchitecture",
    "describe",
    "download_s3",
    "verify",
    "weights_digest",
]


def digest_files(folder: Path) -> list[Path]:
    """The files :func:`weights_digest` covers, sorted: ``config.json``, the weight files and
    the tokenizer's or image processor's files."""
    if not folder.is_dir():
        raise BaseModelError(f"no model folder at {folder}")
    files = sorted(
        entry
        for entry in folder.iterdir()
        if entry.is_file()
        and (
            entry.name == CONFIG_FILE
            or entry.suffix in WEIGHT_SUFFIXES
            or entry.name in PREPROCESSING_FILES
        )
    )
    if not any(f.suffix in WEIGHT_SUFFIXES for f in files):
        raise BaseModelError(
            f"{folder} holds no weight file ({', '.join('*' + s for s in WEIGHT_SUFFIXES)})"
        )
    if not any(f.name == CONFIG_FILE for f in files):
        raise BaseModelError(f"{folder} holds no {CONFIG_FILE}")
    return files


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def weights_digest(folder: str | Path) -> str:
    """SHA-256 over the sorted (file name, SHA-256 of the file) of ``config.json``, the
    folder's weight files and its preprocessing files: equal digests, equal weights seeing equal
    inputs, whatever else the folder holds (a README, a model card)."""
    location = Path(folder)
    digest = hashlib.sha256()
    for path in digest_files(location):
        digest.update(f"{path.relative_to(location).as_posix()}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def verify(folder: str | Path, expected: str) -> None:
    """Raise :class:`BaseModelChanged` unless the folder's weights digest to ``expected``."""
    location = Path(folder)
    actual = weights_digest(location)
    if actual != expected:
        names = ", ".join(p.name for p in digest_files(location))
        raise BaseModelChanged(
            f"the base model at {location} changed since it was registered: its files "
            f"({names}) digest to {actual}, the catalogue records {expected}; restore the "
            "registered files or register the new ones under another name"
        )


@dataclass(frozen=True)
class Description:
    """What the catalogue records of a base model, read from its folder."""

    family: str
    modality: str
    n_layers: int
    hidden_size: int
    default_targets: tuple[str, ...]
    sha256: str


def describe(folder: str | Path) -> Description:
    """Read the folder's config offline, name its family (an unsupported architecture raises
    ``UnsupportedArchitecture`` here, at registration, never at training) and digest it."""
    from transformers import AutoConfig  # heavy: only where a folder is described

    location = Path(folder)
    sha256 = weights_digest(location)  # first: it says clearly what is missing
    try:
        config = AutoConfig.from_pretrained(location, local_files_only=True)
    except (OSError, ValueError) as error:
        raise BaseModelError(f"{location}: no readable Hugging Face config: {error}") from error
    family = family_of(config)  # raises UnsupportedArchitecture, naming the supported types
    return Description(
        family=family.name,
        modality=str(family.modality),
        n_layers=int(config.num_hidden_layers),
        hidden_size=int(config.hidden_size),
        default_targets=tuple(family.default_targets),
        sha256=sha256,
    )


def download_s3(
    client: S3Client, bucket: str, prefix: str, root: Path, expected: str | None = None
) -> Path:
    """Download every object under ``prefix`` into ``root/<sha256>/`` (once: a folder already
    there is reused) and return that folder. ``expected``: the registered digest, checked before
    the folder takes its name (a mismatch raises :class:`BaseModelChanged`)."""
    if expected is not None and (root / expected).is_dir():
        return root / expected
    root.mkdir(parents=True, exist_ok=True)
    incoming = root / f".incoming-{uuid.uuid4().hex}"
    base = prefix.strip("/")
    try:
        paginator = client.get_paginator("list_objects_v2")
        count = 0
        for page in paginator.paginate(Bucket=bucket, Prefix=f"{base}/" if base else ""):
            for item in page.get("Contents", []):
                key = item["Key"]
                relative = key[len(base) + 1 :] if base else key
                if not relative or relative.endswith("/"):
                    continue
                target = (incoming / relative).resolve()
                if incoming.resolve() not in target.parents:
                    raise BaseModelError(f"s3://{bucket}/{key}: a key outside its prefix")
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, key, str(target))
                count += 1
        if not count:
            raise BaseModelError(f"s3://{bucket}/{base}: no object under this prefix")
        digest = weights_digest(incoming)
        if expected is not None and digest != expected:
            verify(incoming, expected)  # raises, naming the files and both digests
        final = root / digest
        try:
            os.replace(incoming, final)
        except OSError:  # another process got there first, with the same digest
            if not final.is_dir():
                raise
        return final
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
