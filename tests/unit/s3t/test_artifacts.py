from __future__ import annotations

import pytest
import torch

from unlearning.artifacts import (
    ArtifactCorruptError,
    ArtifactNotFoundError,
    LocalArtifactStore,
    artifact_ref,
    stored_ref,
)
from unlearning.s3t.weights import LoraPair, StageWeights


def test_content_addressed_and_write_once(store: LocalArtifactStore) -> None:
    ref = store.put(b"adapter")
    assert ref == artifact_ref(b"adapter")
    assert store.put(b"adapter") == ref
    assert store.get(ref) == b"adapter"
    assert store.put(b"other") != ref
    assert store.exists(ref)


def test_missing_corrupt_and_malformed_references(store: LocalArtifactStore) -> None:
    with pytest.raises(ArtifactNotFoundError):
        store.get(artifact_ref(b"never stored"))
    ref = store.put(b"adapter")
    path = store.root / ref[7:9] / ref[7:]
    path.write_bytes(b"tampered")
    with pytest.raises(ArtifactCorruptError):
        store.get(ref)
    with pytest.raises(ValueError, match="not an artifact reference"):
        store.get("../../etc/passwd")


def test_stored_ref_names_the_bytes_really_stored(store: LocalArtifactStore) -> None:
    ref, other = store.put(b"adapter"), store.put(b"other adapter")
    assert stored_ref(store, ref) == ref
    (store.root / ref[7:9] / ref[7:]).write_bytes(b"other adapter")  # swapped, name unchanged
    assert stored_ref(store, ref) == other
    with pytest.raises(ArtifactCorruptError) as caught:
        store.get(ref)
    assert (caught.value.ref, caught.value.actual) == (ref, other)
    assert stored_ref(store, artifact_ref(b"never stored")) is None


def test_stage_weights_round_trip_bitwise() -> None:
    torch.manual_seed(0)
    weights = StageWeights(
        adapters={(3, "query"): LoraPair(torch.randn(4, 8), torch.randn(8, 4))},
        head_weight=torch.randn(2, 8),
        head_bias=torch.randn(2),
        scaling=2.5,
    )
    data = weights.to_bytes()
    assert data == weights.to_bytes()
    loaded = StageWeights.from_bytes(data)
    assert loaded.layers == (3,)
    assert loaded.scaling == 2.5
    assert torch.equal(loaded.adapters[(3, "query")].b, weights.adapters[(3, "query")].b)
    assert torch.equal(loaded.head_bias, weights.head_bias)
    assert loaded.to_bytes() == data
