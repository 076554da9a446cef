"""Sample registration: deterministic placement, per-row errors, typed domain errors."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import Model, Sample, SamplePayload, Shard, Slice, Split, Task, Tenant
from service.db.repositories import (
    LineageRepository,
    ModelRepository,
    NewSample,
    SampleRepository,
    TenantRepository,
)
from service.errors import (
    DuplicateSampleError,
    EvalSplitFullError,
    InvalidModelConfigError,
    InvalidSampleError,
    ModelNotFoundError,
)
from tests.conftest import default_base_model_id, make_model
from unlearning.device import local_profile
from unlearning.sharding import PlacementPolicy, assign


def _subject_placed(model: Model) -> Model:
    """The model under `subject` placement (the API's default; the repository's is `sample`)."""
    model.placement = PlacementPolicy.subject
    return model


class TestPlacement:
    def test_sample_lands_on_its_stable_hash_placement(
        self, session: Session, model: Model
    ) -> None:
        repo = SampleRepository.from_session(session)
        rows = [NewSample(f"s{i}", "pos", text=f"text {i}") for i in range(40)]
        stored = repo.add_many(model, rows).stored
        assert len(stored) == 40
        for sample in stored:
            shard = session.get(Shard, sample.shard_id)
            slice_ = session.get(Slice, sample.slice_id)
            assert shard is not None and slice_ is not None
            assert slice_.shard_id == shard.id
            expected = assign(str(model.id), sample.external_id, model.n_shards, model.n_slices)
            assert (shard.index, slice_.index) == expected
        assert len({(s.shard_id, s.slice_id) for s in stored}) > 1

    def test_new_subjects_fill_the_least_loaded_slices_within_the_bound(
        self, session: Session, tenant: Tenant
    ) -> None:
        """The issue's example: 1,000 rows of 20 subjects on 4 shards of 3 slices, which the
        subject's hash left with empty slices. Each subject lives in one slice, and no slice
        exceeds the mean by more than the largest subject (:func:`place_subjects`)."""
        model = _subject_placed(make_model(session, tenant, n_shards=4, n_slices=3))
        repo = SampleRepository.from_session(session)
        rows = [
            NewSample(f"s{i}", "pos", text=f"t{i}", subject_id=f"subject-{i % 20}")
            for i in range(1000)
        ]
        stored = repo.add_many(model, rows).stored
        sizes = [size for row in repo.slice_sizes(model) for size in row]
        assert min(sizes) > 0 and max(sizes) <= sum(sizes) / len(sizes) + 50, sizes
        slices: dict[str | None, set[uuid.UUID | None]] = {}
        for sample in stored:
            slices.setdefault(sample.subject_id, set()).add(sample.slice_id)
        assert all(len(held) == 1 for held in slices.values())

    def test_a_subject_keeps_its_slice_and_a_new_one_goes_to_the_lightest(
        self, session: Session, tenant: Tenant
    ) -> None:
        model = _subject_placed(make_model(session, tenant, n_shards=2, n_slices=2))
        repo = SampleRepository.from_session(session)
        first = repo.add(model, NewSample("a0", "pos", text="x", subject_id="alice"))
        # No subject: by the id's hash, as under `sample` placement.
        plain = repo.add_many(model, [NewSample(f"p{i}", "pos", text="x") for i in range(12)])
        for sample in plain.stored:
            shard = session.get(Shard, sample.shard_id)
            slice_ = session.get(Slice, sample.slice_id)
            assert shard is not None and slice_ is not None
            hashed = assign(str(model.id), sample.external_id, 2, 2)
            assert (shard.index, slice_.index) == hashed
        later = repo.add_many(
            model, [NewSample(f"a{i}", "pos", text="x", subject_id="alice") for i in (1, 2)]
        ).stored
        assert {s.slice_id for s in later} == {first.slice_id}  # alice's slice, however full
        sizes = repo.slice_sizes(model)
        lightest = min(
            ((shard, slice_) for shard in range(2) for slice_ in range(2)),
            key=lambda cell: sizes[cell[0]][cell[1]],
        )
        bob = repo.add(model, NewSample("b0", "pos", text="x", subject_id="bob"))
        shard = session.get(Shard, bob.shard_id)
        slice_ = session.get(Slice, bob.slice_id)
        assert shard is not None and slice_ is not None
        assert sizes[shard.index][slice_.index] == sizes[lightest[0]][lightest[1]]


class TestBulkRegistration:
    def test_bad_and_duplicate_rows_are_reported_and_the_rest_stored(
        self, session: Session, model: Model
    ) -> None:
        repo = SampleRepository.from_session(session)
        repo.add(model, NewSample("old", "neg", text="already here"))
        rows = [
            NewSample("a", "pos", text="fine"),
            NewSample("old", "pos", text="dup of stored"),
            NewSample("a", "neg", text="dup within batch"),
            NewSample("b", "maybe", text="unknown label"),
            NewSample("c", 1, text="label by index"),
            NewSample("d", "pos"),  # no input
            NewSample("", "pos", text="empty id"),
        ]
        result = repo.add_many(model, rows)
        assert [s.external_id for s in result.stored] == ["a", "c"]
        errors = {e.row: type(e.error) for e in result.errors}
        assert errors == {
            1: DuplicateSampleError,
            2: DuplicateSampleError,
            3: InvalidSampleError,
            5: InvalidSampleError,
            6: InvalidSampleError,
        }
        payload = session.get(SamplePayload, result.stored[1].id)
        assert payload is not None and payload.label_index == 1

    def test_duplicate_external_id_is_a_domain_error(self, session: Session, model: Model) -> None:
        repo = SampleRepository.from_session(session)
        repo.add(model, NewSample("x", "pos", text="t"))
        with pytest.raises(DuplicateSampleError):
            repo.add(model, NewSample("x", "neg", text="again"))

    @pytest.mark.parametrize("label", [0.5, True, None, "POS", 2, -1, [1]])
    def test_wrong_classification_label_is_a_domain_error(
        self, session: Session, model: Model, label: object
    ) -> None:
        with pytest.raises(InvalidSampleError):
            SampleRepository.from_session(session).add(
                model,
                NewSample("x", label, text="t"),  # type: ignore[arg-type]
            )

    @pytest.mark.parametrize("label", ["1.0", True, float("nan"), float("inf")])
    def test_wrong_regression_label_is_a_domain_error(
        self, session: Session, tenant: Tenant, label: object
    ) -> None:
        model = make_model(session, tenant, task=Task.regression)
        with pytest.raises(InvalidSampleError):
            SampleRepository.from_session(session).add(
                model,
                NewSample("x", label, features=[1.0, 2.0]),  # type: ignore[arg-type]
            )

    def test_regression_sample_with_features(self, session: Session, tenant: Tenant) -> None:
        model = make_model(session, tenant, task=Task.regression)
        sample = SampleRepository.from_session(session).add(
            model, NewSample("x", 3, features=[1, 2.5])
        )
        payload = session.get(SamplePayload, sample.id)
        assert payload is not None
        assert (payload.target, payload.features, payload.label_index) == (3.0, [1.0, 2.5], None)


class TestModels:
    def test_unknown_model_is_a_domain_error(self, session: Session) -> None:
        with pytest.raises(ModelNotFoundError):
            ModelRepository.from_session(session).get(uuid.uuid4())

    def test_other_tenants_model_is_not_found(
        self, session: Session, model: Model, tenant: Tenant
    ) -> None:
        repo = ModelRepository.from_session(session)
        assert repo.get(model.id, tenant_id=tenant.id) is model
        with pytest.raises(ModelNotFoundError):
            repo.get(model.id, tenant_id=uuid.uuid4())

    @pytest.mark.parametrize(
        ("orders", "budget"),
        [
            ([[0, 1, 2], [0, 1]], 2),
            ([[0, 1, 2], [0, 1, 2]], 2),
            ([[0, 1, 2], [1, 2, 0]], 1),
            ([], 1),
        ],
    )
    def test_bad_sequence_orders_are_rejected(
        self, session: Session, tenant: Tenant, orders: list[list[int]], budget: int
    ) -> None:
        with pytest.raises(InvalidModelConfigError):
            ModelRepository.from_session(session).create(
                tenant_id=tenant.id,
                name="m",
                task=Task.classification,
                n_shards=1,
                n_slices=3,
                budget=budget,
                sequence_orders=orders,
                compute_profile=local_profile("cpu"),
                base_model_id=default_base_model_id(session),
                labels=["a", "b"],
            )

    def test_model_skeleton(self, session: Session, model: Model) -> None:
        repo = ModelRepository.from_session(session)
        assert [s.index for s in repo.shards(model.id)] == [0, 1]
        assert [(s.index, s.version) for s in repo.slices(model.id)] == [(0, 0), (1, 0), (2, 0)] * 2
        assert [q.slice_order for q in repo.sequences(model.id)] == [
            [0, 1, 2],
            [1, 2, 0],
            [2, 0, 1],
        ] * 2


class TestLookups:
    def test_subject_and_training_set(self, session: Session, model: Model) -> None:
        repo = SampleRepository.from_session(session)
        stored = repo.add_many(
            model,
            [
                NewSample(f"s{i}", "pos", text="t", subject_id="alice" if i < 3 else None)
                for i in range(30)
            ],
        ).stored
        alice = session.scalars(
            sa.select(Sample)
            .where(Sample.model_id == model.id, Sample.subject_id == "alice")
            .order_by(Sample.id)
        ).all()
        assert sorted(s.external_id for s in alice) == ["s0", "s1", "s2"]
        assert repo.registered_ids(model.id, ["s1", "nope"]) == {"s1"}

        slice_ids = {s.slice_id for s in stored if s.slice_id is not None}
        before = repo.training_set(slice_ids)
        assert [s.external_id for s, _ in before] == sorted(s.external_id for s in stored)
        LineageRepository.from_session(session).deactivate_samples(model.id, [alice[0].id])
        after = {s.id for s, _ in repo.training_set(slice_ids)}
        assert alice[0].id not in after and len(after) == 29


def test_registering_under_subject_placement_locks_the_model_row(
    factory: sessionmaker[Session],
) -> None:
    """Two registrations of one model read the slice loads one after the other: the first
    holds the model row until it commits (PostgreSQL; SQLite serialises writers anyway)."""
    with factory() as session:
        if session.get_bind().dialect.name != "postgresql":
            pytest.skip("SQLite has one writer at a time and no row locks")
        tenant = TenantRepository.from_session(session).create(f"t-{uuid.uuid4().hex[:8]}")
        model = _subject_placed(make_model(session, tenant))
        session.commit()
        model_id = model.id
    locked = (
        sa.select(Model.id).where(Model.id == model_id).with_for_update(nowait=True, key_share=True)
    )
    with factory() as first, factory() as second:
        held = first.get(Model, model_id)
        assert held is not None
        SampleRepository.from_session(first).add(
            held, NewSample("a0", "pos", text="x", subject_id="alice")
        )
        with pytest.raises(OperationalError, match="could not obtain lock"):
            second.execute(locked)
        second.rollback()
        first.commit()
        assert second.execute(locked).scalar_one() == model_id


class TestEvalSplit:
    """Samples registered with `split: eval`: never placed, capped, deletable."""

    def _eval(self, name: str, subject: str | None = None) -> NewSample:
        return NewSample(name, "pos", text=f"held out {name}", subject_id=subject, split=Split.eval)

    def test_an_evaluation_sample_is_never_placed_nor_trained_on(
        self, session: Session, tenant: Tenant
    ) -> None:
        model = _subject_placed(make_model(session, tenant, n_shards=2, n_slices=2))
        repo = SampleRepository.from_session(session)
        held_out = repo.add_many(model, [self._eval(f"e{i}", "alice") for i in range(5)]).stored
        assert all(s.split is Split.eval and s.shard_id is None for s in held_out)
        assert all(s.slice_id is None for s in held_out)
        assert repo.slice_sizes(model) == [[0, 0], [0, 0]]
        assert not ModelRepository.from_session(session).has_live_samples(model.id)
        # The subject's evaluation rows do not pin it to a slice.
        assert repo.subject_slices(model.id, ["alice"]) == {}
        trained = repo.add(model, NewSample("t0", "pos", text="x", subject_id="alice"))
        slices = [s.id for s in ModelRepository.from_session(session).slices(model.id)]
        assert [s.id for s, _ in repo.training_set(slices)] == [trained.id]
        assert [s.id for s, _ in repo.eval_set(model.id)] == [s.id for s in held_out]
        assert repo.eval_count(model.id) == 5

    def test_the_split_is_capped_per_model_and_a_deletion_makes_room(
        self, session: Session, model: Model
    ) -> None:
        repo = SampleRepository.from_session(session)
        result = repo.add_many(model, [self._eval(f"e{i}") for i in range(3)], eval_cap=2)
        assert [s.external_id for s in result.stored] == ["e0", "e1"]
        assert [(e.row, type(e.error)) for e in result.errors] == [(2, EvalSplitFullError)]
        # Training rows are not counted against the cap.
        assert repo.add(model, NewSample("t0", "pos", text="x"), eval_cap=2).split is Split.train
        LineageRepository.from_session(session).deactivate_samples(
            model.id, [result.stored[0].id], purge_payloads=False
        )
        assert repo.add(model, self._eval("e2"), eval_cap=2).split is Split.eval

    def test_deleting_an_evaluation_sample_purges_it_and_invalidates_nothing(
        self, session: Session, model: Model
    ) -> None:
        repo = SampleRepository.from_session(session)
        held_out = repo.add(model, self._eval("e0"))
        trained = repo.add(model, NewSample("t0", "pos", text="x"))
        versions = {s.id: s.version for s in ModelRepository.from_session(session).slices(model.id)}
        # Even when an approximate pass keeps the deleted payloads, no pass reads an
        # evaluation sample's.
        done = LineageRepository.from_session(session).deactivate_samples(
            model.id, [held_out.id, trained.id], purge_payloads=False
        )
        assert done.invalidated == [] and done.shard_ids == {trained.shard_id}
        assert session.get(SamplePayload, held_out.id) is None
        assert session.get(SamplePayload, trained.id) is not None
        assert repo.eval_set(model.id) == [] and repo.eval_count(model.id) == 0
        assert repo.shards_of([held_out.id]) == set()
        after = {s.id: s.version for s in ModelRepository.from_session(session).slices(model.id)}
        assert after == {k: v + (k == trained.slice_id) for k, v in versions.items()}
