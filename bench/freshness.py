"""Freshness from layer ids: did any answer sent after a deletion's 202 use a layer it turned off?

A prediction names the layers that answered (``shards[].layers``); a deletion's 202 (and its
certificate) names the layers it invalidated (``layers_invalidated``). The two come from
different places: the serving process's layer map and the deletion's own transaction, so a
prediction served from a stale map shows up here whatever generation it reports.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx


def layers_of(prediction: dict[str, Any]) -> frozenset[int]:
    """The layer ids a prediction answered from."""
    return frozenset(i for shard in prediction["shards"] for i in shard["layers"])


def invalidated_layers(deletion: dict[str, Any]) -> frozenset[int]:
    """The layers a deletion turned off, as its 202 says (its certificate lists the same)."""
    return frozenset(deletion["layers_invalidated"])


@dataclass(frozen=True)
class Answered:
    """One prediction: when it was sent and answered, its status, and the layers it used."""

    sent: float
    done: float
    status: int
    layers: frozenset[int] | None


@dataclass(frozen=True)
class Deleted:
    """One deletion: when its 202 arrived and the layers it invalidated."""

    accepted: float
    invalidated: frozenset[int]


def stale(predictions: Iterable[Answered], deletions: Sequence[Deleted]) -> int:
    """How many answered predictions, sent after some deletion's 202, used a layer that deletion
    invalidated."""
    count = 0
    for prediction in predictions:
        if prediction.status != 200 or prediction.layers is None:
            continue
        count += any(
            d.accepted <= prediction.sent and prediction.layers & d.invalidated for d in deletions
        )
    return count


def first_clean(
    client: httpx.Client,
    url: str,
    text: str,
    sent: float,
    invalidated: frozenset[int],
    *,
    attempts: int = 50,
) -> tuple[float | None, int]:
    """Seconds from ``sent`` to the first prediction that uses none of the deletion's
    invalidated layers, and how many answers before it did use one."""
    dirty = 0
    for _ in range(attempts):
        response = client.post(url, json={"texts": [text]})
        answered = time.monotonic()
        if response.status_code != 200:
            continue
        if not layers_of(response.json()) & invalidated:
            return answered - sent, dirty
        dirty += 1
    return None, dirty
