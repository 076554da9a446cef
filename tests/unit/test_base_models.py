"""A base model's digest names its weights (and nothing else), and the engines' LRU keeps the
base models a process holds under its memory bound (sizes faked: no model is loaded)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from service.engine import SizedLru
from unlearning.base_models import BaseModelChanged, BaseModelError, verify, weights_digest


def _folder(root: Path, weights: bytes = b"w" * 64) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text('{"model_type": "bert"}')
    (root / "model.safetensors").write_bytes(weights)
    (root / "tokenizer.json").write_text("{}")
    return root


def test_the_digest_names_the_weights_config_and_preprocessing_only(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "a")
    digest = weights_digest(folder)
    assert len(digest) == 64 and digest == weights_digest(_folder(tmp_path / "b"))
    (folder / "README.md").write_text("notes")  # neither weights nor what decides the inputs
    assert weights_digest(folder) == digest
    (folder / "tokenizer.json").write_text('{"other": 1}')  # another vocabulary
    assert weights_digest(folder) != digest
    (folder / "tokenizer.json").write_text("{}")
    (folder / "preprocessor_config.json").write_text('{"image_mean": [0.5]}')
    assert weights_digest(folder) != digest
    (folder / "preprocessor_config.json").unlink()
    (folder / "model.safetensors").write_bytes(b"w" * 63 + b"x")  # one byte of the weights
    assert weights_digest(folder) != digest
    (folder / "model.safetensors").write_bytes(b"w" * 64)
    (folder / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    assert weights_digest(folder) != digest


def test_an_added_weight_file_changes_the_digest(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "a")
    digest = weights_digest(folder)
    (folder / "extra.bin").write_bytes(b"more weights")
    assert weights_digest(folder) != digest


def test_verify_refuses_changed_weights_naming_both_digests(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "a")
    registered = weights_digest(folder)
    verify(folder, registered)
    (folder / "model.safetensors").write_bytes(b"other weights")
    with pytest.raises(BaseModelChanged) as caught:
        verify(folder, registered)
    message = str(caught.value)
    assert registered in message and weights_digest(folder) in message
    assert "model.safetensors" in message and "config.json" in message


def test_a_folder_without_weights_or_config_has_no_digest(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "a")
    (folder / "model.safetensors").unlink()
    with pytest.raises(BaseModelError, match="no weight file"):
        weights_digest(folder)
    with pytest.raises(BaseModelError, match="no model folder"):
        weights_digest(tmp_path / "missing")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.bin").write_bytes(b"w")
    with pytest.raises(BaseModelError, match=r"config\.json"):
        weights_digest(bare)


class Fake:
    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size


def _lru(limit: int) -> tuple[SizedLru[str, Fake], list[str]]:
    loads: list[str] = []
    return SizedLru(limit, lambda value: value.size), loads


def _load(loads: list[str], name: str, size: int = 4) -> Fake:
    loads.append(name)
    return Fake(name, size)


def test_the_lru_drops_the_least_recently_used_beyond_its_bound() -> None:
    lru, loads = _lru(10)
    for name in ("a", "b"):
        lru.get(name, lambda n=name: _load(loads, n))  # type: ignore[misc]
    assert lru.held() == ["a", "b"] and lru.held_bytes == 8
    lru.get("a", lambda: _load(loads, "a"))  # held: used again, not loaded
    assert loads == ["a", "b"] and lru.held() == ["b", "a"]
    lru.get("c", lambda: _load(loads, "c"))
    assert lru.held() == ["a", "c"] and lru.held_bytes == 8 <= lru.limit
    lru.get("b", lambda: _load(loads, "b"))  # dropped: loaded again
    assert loads == ["a", "b", "c", "b"] and lru.held() == ["c", "b"]


def test_the_lru_keeps_the_one_in_use_even_alone_beyond_the_bound() -> None:
    lru, loads = _lru(10)
    lru.get("a", lambda: _load(loads, "a"))
    big = lru.get("big", lambda: _load(loads, "big", 25))
    assert big.size == 25 and lru.held() == ["big"] and lru.held_bytes == 25
    lru.get("a", lambda: _load(loads, "a"))
    assert lru.held() == ["a"] and lru.held_bytes == 4


def test_a_pinned_value_is_not_dropped_until_released() -> None:
    lru, loads = _lru(10)
    with lru.pinned("a", lambda: _load(loads, "a", 6)) as a:
        lru.get("b", lambda: _load(loads, "b", 6))  # over the bound: `a` is in use
        assert a.name == "a" and lru.held() == ["a", "b"] and lru.held_bytes == 12
    assert lru.held() == ["b"] and lru.held_bytes == 6  # released: back under the bound


def test_one_key_is_loaded_once_under_concurrent_use() -> None:
    lru, loads = _lru(100)
    gate = threading.Barrier(8)

    def use() -> None:
        gate.wait()
        lru.get("a", lambda: _load(loads, "a"))

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == ["a"]
