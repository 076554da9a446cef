"""Keyed identifier hashes: a secret per tenant, HMAC-SHA-256 under it wherever a deletion keeps
an identifier, honest older rows (plain SHA-256, said so), and the migration that made them."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.orm import Session

from service.db import migrate
from service.db.engine import make_engine, make_session_factory, unit_of_work
from service.db.hashing import SECRET_BYTES, HashScheme, keyed_hash, plain_hash
from service.db.models import Model, Sample, Tenant, TenantSecret
from service.db.repositories import (
    DeletionRepository,
    NewSample,
    SampleRepository,
    TenantRepository,
)
from service.db.repositories.samples import DELETED_PREFIX
from service.deletions.certificate import verify_inclusion
from service.deletions.schemas import DeletionCreate, DeletionVerify
from service.deletions.service import request_deletion
from tests.conftest import FreshDatabase, make_model

REVISION = "d7f9a1b3c5e7"


def _register(session: Session, model: Model, subject: str = "alice@example.com") -> None:
    rows = [
        NewSample(f"s{i}", "pos", text="t", subject_id=subject if i < 2 else None) for i in range(6)
    ]
    SampleRepository.from_session(session).add_many(model, rows)


def _delete(session: Session, model: Model, **target: object) -> uuid.UUID:
    body = DeletionCreate.model_validate({"model_id": model.id, **target})
    return request_deletion(session, model.tenant_id, body, actor="test").request.id


class TestSecrets:
    def test_every_tenant_gets_its_own(self, session: Session, tenant: Tenant) -> None:
        other = TenantRepository.from_session(session).create(f"t-{uuid.uuid4().hex[:8]}")
        secrets = {
            s.tenant_id: s.identifier_secret for s in session.scalars(sa.select(TenantSecret))
        }
        assert len(secrets[tenant.id]) == len(secrets[other.id]) == SECRET_BYTES
        assert secrets[tenant.id] != secrets[other.id]
        hasher = TenantRepository.from_session(session).hasher(tenant.id)
        assert not hasher.legacy and hasher.secret == secrets[tenant.id]
        assert secrets[tenant.id].hex() not in repr(hasher)
        assert hasher("alice") == keyed_hash(secrets[tenant.id], "alice") != plain_hash("alice")

    def test_one_small_query_per_deletion(self, session: Session, model: Model) -> None:
        _register(session, model)
        session.expire_all()  # nothing of the tenant in the session, as in a fresh request
        reads: list[str] = []

        def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            if "tenant_secrets" in statement:
                reads.append(statement)

        connection = session.connection()
        sa.event.listen(connection, "before_cursor_execute", count)
        try:
            _delete(session, model, sample_ids=["s3", "s4"])  # records, then scrubs: one read
        finally:
            sa.event.remove(connection, "before_cursor_execute", count)
        assert len(reads) == 1


class TestDeletions:
    def test_every_kept_identifier_is_keyed(self, session: Session, model: Model) -> None:
        _register(session, model)
        secret = TenantRepository.from_session(session).hasher(model.tenant_id).secret
        deletion_id = _delete(session, model, subject_id="alice@example.com")
        request = DeletionRepository.from_session(session).get(deletion_id)
        assert request.hash_scheme is HashScheme.hmac_sha256
        assert request.subject_hash == keyed_hash(secret, "alice@example.com")
        items = DeletionRepository.from_session(session).items(deletion_id)
        assert sorted(i.external_id_hash for i in items) == sorted(
            keyed_hash(secret, e) for e in ("s0", "s1")
        )
        names = session.scalars(sa.select(Sample.external_id).where(Sample.deleted)).all()
        assert sorted(names) == sorted(DELETED_PREFIX + keyed_hash(secret, e) for e in ("s0", "s1"))
        plain = {plain_hash(v) for v in ("s0", "s1", "alice@example.com")}
        stored = {request.body_hash, request.subject_hash, *(i.external_id_hash for i in items)}
        assert not plain & stored

        # A deleted sample is still found by its id: deleting it again changes nothing.
        again = _delete(session, model, sample_ids=["s0"])
        assert DeletionRepository.from_session(session).get(again).n_already_deleted == 1

    def test_verify(self, session: Session, model: Model) -> None:
        _register(session, model)
        subject = _delete(session, model, subject_id="alice@example.com")
        samples = _delete(session, model, sample_ids=["s3", "nope"])

        def included(deletion_id: uuid.UUID, **identifier: str) -> bool:
            body = DeletionVerify.model_validate(identifier)
            answer = verify_inclusion(session, model.tenant_id, deletion_id, body)
            assert answer.deletion_id == deletion_id and answer.scheme is HashScheme.hmac_sha256
            return answer.included

        assert included(subject, subject_id="alice@example.com")
        assert included(subject, sample_id="s0") and included(subject, sample_id="s1")
        assert not included(subject, subject_id="bob@example.com")
        assert not included(subject, sample_id="s3")
        assert included(samples, sample_id="s3") and included(samples, sample_id="nope")
        assert not included(samples, sample_id="s0")
        assert not included(samples, subject_id="alice@example.com")

    def test_older_rows_stay_verifiable(self, session: Session, model: Model) -> None:
        """A request recorded before keyed hashes kept plain SHA-256 and says so."""
        _register(session, model)
        deletion_id = _delete(session, model, subject_id="alice@example.com")
        request = DeletionRepository.from_session(session).get(deletion_id)
        request.hash_scheme = HashScheme.sha256
        request.subject_hash = plain_hash("alice@example.com")
        for item, external_id in zip(
            DeletionRepository.from_session(session).items(deletion_id), ("s0", "s1"), strict=True
        ):
            item.external_id_hash = plain_hash(external_id)
        session.flush()

        body = DeletionVerify(subject_id="alice@example.com")
        answer = verify_inclusion(session, model.tenant_id, deletion_id, body)
        assert answer.included and answer.scheme is HashScheme.sha256
        answer = verify_inclusion(
            session, model.tenant_id, deletion_id, DeletionVerify(sample_id="s1")
        )
        assert answer.included
        answer = verify_inclusion(
            session, model.tenant_id, deletion_id, DeletionVerify(sample_id="s2")
        )
        assert not answer.included

    def test_a_sample_deleted_before_keyed_hashes_is_found(
        self, session: Session, model: Model
    ) -> None:
        """Its name is still `deleted:<sha256>`: a legacy tenant looks it up that way too."""
        _register(session, model)
        old = session.scalars(sa.select(Sample).where(Sample.external_id == "s5")).one()
        old.external_id, old.deleted = DELETED_PREFIX + plain_hash("s5"), True
        secret = session.get_one(TenantSecret, model.tenant_id)
        repo = SampleRepository.from_session(session)
        hasher = TenantRepository.from_session(session).hasher(model.tenant_id)
        assert "s5" not in repo.deleted_ids(model.id, ["s5"], hasher)
        secret.legacy_id_hashes = True
        session.flush()
        legacy = TenantRepository.from_session(session).hasher(model.tenant_id)
        assert repo.deleted_ids(model.id, ["s5"], legacy)["s5"] == old.id


def test_the_migration_gives_existing_tenants_secrets(fresh_db: FreshDatabase) -> None:
    """Tenants and requests written before the migration: a fresh secret each (marked legacy),
    and their requests keep `sha256`. The schema then matches the models."""
    url = fresh_db.empty_url()
    migrate.upgrade(url)
    engine = make_engine(url)
    with unit_of_work(make_session_factory(engine)) as session:
        tenants = TenantRepository.from_session(session)
        first, second = tenants.create("first"), tenants.create("second")
        model = make_model(session, first)
        DeletionRepository.from_session(session).new(
            tenant_id=first.id, model_id=model.id, body="b", hasher=tenants.hasher(first.id)
        )
        ids = {first.id, second.id}
    before = ScriptDirectory.from_config(migrate.alembic_config(url)).get_revision(REVISION)
    assert before is not None and isinstance(before.down_revision, str)
    migrate.downgrade(url, before.down_revision)
    assert "tenant_secrets" not in sa.inspect(engine).get_table_names()

    migrate.upgrade(url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT tenant_id, identifier_secret, legacy_id_hashes FROM tenant_secrets")
        ).all()
        schemes = conn.execute(sa.text("SELECT hash_scheme FROM deletion_requests")).scalars()
        assert list(schemes) == ["sha256"]
    secrets = {bytes(secret) for _, secret, _ in rows}
    assert len(rows) == len(secrets) == len(ids) and all(len(s) == SECRET_BYTES for s in secrets)
    assert all(legacy for _, _, legacy in rows)
    with unit_of_work(make_session_factory(engine)) as session:
        assert {TenantRepository.from_session(session).hasher(i).secret for i in ids} == secrets
    engine.dispose()
    migrate.check(url)
