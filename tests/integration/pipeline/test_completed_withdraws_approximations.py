"""`completed` means nothing derived from the deleted data remains, under
`approximate_then_exact`, with the deletion's jobs run by the runners in this process.

The approximate pass edits every order the deletion cut; the deletion waits only for the exact
retrain of the order each shard serves, and the shards' other orders are parked (600 s by
default). When that retrain lands and the deletion completes, the approximate layers the parked
orders still held (edited from weights trained on the deleted samples) are withdrawn: not
servable, their artifacts collected, and the certificate lists none as served. Those orders fall
back to their exact prefixes until their parked retrains restore them.
"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from service.db.models import Job, JobKind, JobStatus, Layer, LayerState
from service.engine import artifact_store
from service.settings import Settings
from tests.integration.api import (
    Api,
    InProcessWorker,
    active_digests,
    samples,
    trained_model,
    trained_without,
)

pytestmark = pytest.mark.integration
APPROXIMATE = {"unlearning_policy": "approximate_then_exact"}
GONE = ["s003", "s010"]


def _retrains(worker: InProcessWorker, deletion: dict[str, str]) -> tuple[list[uuid.UUID], int]:
    """The deletion's own retrains (not parked), and how many retrains are parked."""
    with worker.factory() as session:
        jobs = session.scalars(
            sa.select(Job).where(Job.kind == JobKind.retrain, Job.status == JobStatus.queued)
        ).all()
        mine = {uuid.UUID(j) for j in deletion["jobs"]}
        own = [j.id for j in jobs if j.id in mine]
        parked = [j for j in jobs if j.id not in mine]
        assert all(j.deferred_until is not None for j in parked)
        return own, len(parked)


def test_completion_withdraws_the_approximate_layers_of_parked_orders(
    api: Api, worker: InProcessWorker, settings: Settings
) -> None:
    rows = samples(24)
    model_id = trained_model(api, worker, rows, APPROXIMATE)
    deletion = api.ok(api.delete(model_id, sample_ids=GONE), 202)
    assert worker.approximate() == 1
    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    assert certificate["unlearning"] == "approximate"
    approximated = {layer["layer_id"] for layer in certificate["layers_approximated"]}

    # Today's state: the served orders' exact retrains run, the other orders stay parked.
    own, parked = _retrains(worker, deletion)
    assert own and parked, "the other orders of the shards wait, parked"
    for job_id in own:
        worker.run(job_id)
    done = api.ok(api.get(f"/deletions/{deletion['id']}"))
    assert done["status"] == "completed"
    assert _retrains(worker, deletion)[1] == parked, "the parked orders have not run"

    # Nothing derived from the deleted samples is servable or stored.
    with worker.factory() as session:
        layers = {
            layer.id: layer
            for layer in session.scalars(sa.select(Layer).where(Layer.id.in_(approximated)))
        }
        assert layers and all(layer.state is not LayerState.active for layer in layers.values())
        still_active = session.scalars(
            sa.select(Layer.id).where(Layer.approximate.is_(True), Layer.state == "active")
        ).all()
        assert not still_active, f"approximate layers still servable: {still_active}"
    store = artifact_store(settings)
    kept = {layer.artifact_ref for layer in layers.values() if layer.artifact_ref}
    assert kept and not any(store.exists(ref) for ref in kept), "their artifacts are stored"

    status = api.ok(api.get(f"/models/{model_id}/status"))
    sequences = [q for s in status["shards"] for q in s["sequences"]]
    assert all(q["valid_prefix"] == q["exact_prefix"] for q in sequences), sequences
    assert any(q["exact_prefix"] < 2 for q in sequences), "parked orders fall back"
    assert status["estimated_quality"]["approximate_depth"] == 0

    certificate = api.ok(api.get(f"/deletions/{deletion['id']}/certificate"))
    assert certificate["status"] == "completed" and certificate["unlearning"] == "exact"
    assert certificate["layers_approximated"]
    assert not any(layer["served"] for layer in certificate["layers_approximated"])
    assert all(layer["artifact_deleted"] for layer in certificate["layers_approximated"])

    # The parked orders' retrains restore them, bitwise the training without the data.
    worker.drain()
    model = api.ok(api.get(f"/models/{model_id}"))
    assert active_digests(worker, model_id) == trained_without(
        worker.engine, model, rows, set(GONE)
    )
