"""Sealing the deleted samples a deletion keeps (service.db.sealing): AES-GCM under a fresh
data key, itself sealed under UNLEARN_SEALING_KEY when one is set."""

from __future__ import annotations

import base64
import os

import pytest

from service.db import sealing

MASTER = os.urandom(32)


def test_a_sealed_value_opens_only_with_its_key_and_context() -> None:
    key = os.urandom(32)
    sealed = sealing.seal(key, b"alice's message", context=b"kept-samples:1")
    assert b"alice" not in sealed
    assert sealing.unseal(key, sealed, context=b"kept-samples:1") == b"alice's message"
    with pytest.raises(sealing.SealingError):
        sealing.unseal(key, sealed, context=b"kept-samples:2")  # another deletion's row
    with pytest.raises(sealing.SealingError):
        sealing.unseal(os.urandom(32), sealed, context=b"kept-samples:1")
    altered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(sealing.SealingError):
        sealing.unseal(key, altered, context=b"kept-samples:1")
    # A fresh nonce each time: the same value never seals to the same bytes.
    assert sealing.seal(key, b"x", context=b"c") != sealing.seal(key, b"x", context=b"c")


def test_the_data_key_is_sealed_under_the_master_key_when_there_is_one() -> None:
    key, stored, wrapped = sealing.new_data_key(b"ctx", MASTER)
    assert wrapped and stored != key and key not in stored
    assert sealing.data_key(stored, wrapped, b"ctx", MASTER) == key
    with pytest.raises(sealing.SealingError, match="not set"):
        sealing.data_key(stored, wrapped, b"ctx", None)
    with pytest.raises(sealing.SealingError):
        sealing.data_key(stored, wrapped, b"ctx", os.urandom(32))  # another master key
    key, stored, wrapped = sealing.new_data_key(b"ctx", None)
    assert (stored, wrapped) == (key, False)


def test_the_master_key_is_32_bytes_of_base64() -> None:
    assert sealing.master_key(base64.b64encode(MASTER).decode()) == MASTER
    with pytest.raises(ValueError, match="base64"):
        sealing.master_key("not base64!")
    with pytest.raises(ValueError, match="32 bytes"):
        sealing.master_key(base64.b64encode(b"short").decode())
