"""No stale weights under concurrency: many threads delete and predict at once.

No worker runs, so validity only shrinks. For every deletion we note when its 202 arrived and
which layers its certificate says it invalidated; for every prediction, when it was sent and
which (shard, sequence, stages) prefixes answered. A prediction sent after a deletion's 202 may
not use any layer that deletion invalidated.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from service.db.models import Layer, Shard, SliceSequence
from tests.integration.api import Api, InProcessWorker, samples, trained_model

pytestmark = pytest.mark.integration
DELETERS, PREDICTORS, PER_DELETER = 4, 4, 2


def test_no_prediction_after_a_202_uses_what_it_invalidated(
    api: Api, worker: InProcessWorker
) -> None:
    rows = samples(64)
    model_id = trained_model(api, worker, rows, {"n_shards": 4, "budget": 1})
    api.ok(api.post(f"/models/{model_id}/predict", {"texts": ["warm up"]}))  # load the engine
    done = threading.Event()
    deletions: list[tuple[float, str]] = []  # (202 received, deletion id)
    predictions: list[tuple[float, list[dict[str, Any]]]] = []  # (sent, shards that answered)
    attempts = [0]
    answered: list[float] = []  # when each answered prediction (409s included) was sent

    def delete(first: int) -> None:
        for i in range(first, first + PER_DELETER):
            response = api.delete(model_id, sample_ids=[f"s{i * 5:03d}"])
            received = time.monotonic()
            deletions.append((received, api.ok(response, 202)["id"]))
            # Let predictions interleave: go on once one sent after this 202 was answered (a
            # fixed pause let slow predictions miss every deletion and check nothing).
            deadline = received + 60  # generous: the suite runs process tests beside this one
            while not any(t > received for t in answered) and time.monotonic() < deadline:
                time.sleep(0.02)

    def predict() -> None:
        while not done.is_set():
            sent = time.monotonic()
            attempts[0] += 1
            response = api.post(f"/models/{model_id}/predict", {"texts": ["good item"]})
            answered.append(sent)
            if response.status_code == 409:  # nothing servable any more
                continue
            predictions.append((sent, api.ok(response)["shards"]))

    with ThreadPoolExecutor(DELETERS + PREDICTORS) as pool:
        predictors = [pool.submit(predict) for _ in range(PREDICTORS)]
        deleters = [pool.submit(delete, d * PER_DELETER) for d in range(DELETERS)]
        try:
            for future in deleters:
                future.result()
        finally:
            done.set()
        for future in predictors:
            future.result()

    with worker.factory() as session:
        where = {
            layer_id: (shard, sequence, position)
            for layer_id, shard, sequence, position in session.execute(
                sa.select(Layer.id, Shard.index, SliceSequence.index, Layer.position)
                .join(SliceSequence, SliceSequence.id == Layer.sequence_id)
                .join(Shard, Shard.id == SliceSequence.shard_id)
            )
        }
    invalidated = {
        deletion_id: [
            where[layer["layer_id"]]
            for layer in api.ok(api.get(f"/deletions/{deletion_id}/certificate"))[
                "layers_invalidated"
            ]
        ]
        for _, deletion_id in deletions
    }
    assert len(deletions) == DELETERS * PER_DELETER and any(invalidated.values())
    assert attempts[0] > DELETERS * PER_DELETER  # predictions really overlapped deletions
    checked = 0
    for sent, shards in predictions:
        served = {(s["shard"], s["sequence"]): s["stages"] for s in shards}
        for received, deletion_id in deletions:
            if sent <= received:
                continue
            for shard, sequence, position in invalidated[deletion_id]:
                checked += 1
                assert served.get((shard, sequence), 0) < position, (deletion_id, shards)
    assert checked
