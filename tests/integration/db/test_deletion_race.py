"""Two requests for the same sample, the second sent while the first is still in its transaction:
exactly one deletes it, and the model's slice versions and generation move once.

Before the model row was locked first, the second request read the sample (still live: the
first had not committed) before waiting for that lock, and kept its stale view afterwards: both
reported ``deleted: 1`` and invalidated layers twice.
"""

from __future__ import annotations

import threading
import time
import uuid

from sqlalchemy.orm import Session, sessionmaker

from service.db.models import Sample, Slice, Tenant
from service.db.repositories import (
    DeletionRepository,
    ModelRepository,
    SampleRepository,
    TenantRepository,
)
from service.db.repositories.samples import NewSample
from service.deletions.schemas import DeletionCreate
from service.deletions.service import Accepted, request_deletion
from tests.conftest import make_model


def _setup(factory: sessionmaker[Session]) -> tuple[Tenant, uuid.UUID]:
    with factory() as session, session.begin():
        tenant = TenantRepository.from_session(session).create(f"t-{uuid.uuid4().hex[:6]}")
        model = make_model(session, tenant)
        samples = SampleRepository.from_session(session)
        for i in range(8):
            samples.add(model, NewSample(external_id=f"x{i}", label="pos", text=f"text {i}"))
        return tenant, model.id


def _delete(factory: sessionmaker[Session], tenant: Tenant, model_id: uuid.UUID) -> Accepted:
    with factory() as session, session.begin():
        return request_deletion(
            session,
            tenant.id,
            DeletionCreate(model_id=model_id, sample_ids=["x3"]),
            actor="test",
        )


def test_a_concurrent_second_request_finds_the_sample_deleted(
    factory: sessionmaker[Session],
) -> None:
    tenant, model_id = _setup(factory)
    with factory() as session:
        generation = ModelRepository.from_session(session).get(model_id).serving_generation
    results: dict[str, Accepted] = {}
    first = factory()
    first.begin()
    try:
        results["first"] = request_deletion(
            first, tenant.id, DeletionCreate(model_id=model_id, sample_ids=["x3"]), actor="t"
        )
        # The second request starts while the first still holds its transaction open.
        second = threading.Thread(
            target=lambda: results.__setitem__("second", _delete(factory, tenant, model_id))
        )
        second.start()
        time.sleep(0.5)  # long enough for it to read (the old race) or to wait for the lock
        assert "second" not in results, "the second request did not wait for the first"
        first.commit()
    finally:
        first.close()
    second.join(30)

    assert (results["first"].request.n_deleted, results["second"].request.n_deleted) == (1, 0)
    assert results["second"].request.n_already_deleted == 1
    with factory() as session:
        model = ModelRepository.from_session(session).get(model_id)
        assert model.serving_generation == generation + 1
        [sample_id] = DeletionRepository.from_session(session).deleted_sample_ids(
            results["first"].request.id
        )
        slice_id = session.get_one(Sample, sample_id).slice_id
        assert session.get_one(Slice, slice_id).version == 1  # bumped once
