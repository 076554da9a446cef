"""Sealing deleted samples that must outlive their deletion's transaction (AES-256-GCM).

A deletion under an approximate policy keeps its samples for the approximate pass (and, when
the model opts in, for the grading of that pass): their plaintext payload rows are deleted in the
deletion's own transaction and what the pass needs is sealed into one ``kept_samples`` row, with
a fresh random data key per deletion. With ``UNLEARN_SEALING_KEY`` set (32 bytes, base64), the
data key is itself sealed under it, so the database alone opens nothing; without it the data key
sits next to the sealed rows (it then guards against a stray read of one column, not against a
copy of the database: set it in production). Deleting the row destroys the data key too.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.settings import get_settings

NONCE_BYTES = 12
KEY_BYTES = 32


class SealingError(Exception):
    """A sealed value that does not open: another key, another context, or altered bytes."""


def seal(key: bytes, data: bytes, *, context: bytes) -> bytes:
    """``data`` under ``key``, bound to ``context`` (it opens only with the same context)."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, data, context)


def unseal(key: bytes, sealed: bytes, *, context: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context)
    except (InvalidTag, ValueError) as error:
        raise SealingError("the sealed value does not open with this key and context") from error


def master_key(value: str | None = None) -> bytes | None:
    """``UNLEARN_SEALING_KEY`` (or ``value``) decoded: 32 bytes, base64; None when unset."""
    if value is None:
        secret = get_settings().sealing_key
        value = secret.get_secret_value() if secret is not None else None
    if value is None:
        return None
    try:
        key = base64.b64decode(value, validate=True)
    except binascii.Error as error:
        raise ValueError("UNLEARN_SEALING_KEY must be base64") from error
    if len(key) != KEY_BYTES:
        raise ValueError(f"UNLEARN_SEALING_KEY must decode to {KEY_BYTES} bytes")
    return key


def new_data_key(context: bytes, master: bytes | None) -> tuple[bytes, bytes, bool]:
    """A fresh data key, and how it is stored: sealed under ``master`` when there is one.
    Returns (key, stored, wrapped)."""
    key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
    if master is None:
        return key, key, False
    return key, seal(master, key, context=context), True


def data_key(stored: bytes, wrapped: bool, context: bytes, master: bytes | None) -> bytes:
    """The data key back from how it was stored."""
    if not wrapped:
        return stored
    if master is None:
        raise SealingError("the data key is sealed under UNLEARN_SEALING_KEY, which is not set")
    return unseal(master, stored, context=context)
