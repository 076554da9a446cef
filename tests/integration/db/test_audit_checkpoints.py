"""Audit reads that do not grow with history, on SQLite and PostgreSQL: a read re-hashes the
entries after the chain's checkpoint (and the checkpoint's own entry) and advances it; an entry
edited after the checkpoint is caught by the next read, one edited behind it by the full
verification, whose result every later read reports."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy.orm import Session

from service.audit.service import check_chain, stored_verification, verify_due, verify_fully
from service.cli import main
from service.db import migrate
from service.db.engine import make_engine, make_session_factory, unit_of_work
from service.db.models import AuditCheckpoint, AuditEntry
from service.db.repositories import AuditRepository
from service.db.repositories.audit import entry_hash
from service.housekeeping import housekeep
from service.observability import logs
from service.settings import Settings, get_settings
from tests.conftest import FreshDatabase

pytestmark = pytest.mark.integration
CHAIN = "model:checkpoints"
REVISION = "b3d5f7a9c1e2"  # the migration that made checkpoints and refs


def _disable_guard(session: Session) -> None:
    """Simulate an attacker with DDL rights (the change is rolled back with the test)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update"))
    else:
        session.execute(sa.text("DROP TRIGGER audit_log_no_update"))


def _append(session: Session, n: int, chain: str = CHAIN) -> list[AuditEntry]:
    repo = AuditRepository.from_session(session)
    return [repo.append(chain, actor="key:k", action="step", payload={"n": i}) for i in range(n)]


def _entry(session: Session, seq: int) -> AuditEntry:
    query = sa.select(AuditEntry).where(AuditEntry.chain == CHAIN, AuditEntry.seq == seq)
    return session.scalars(query).one()


def _edit(session: Session, seq: int, *, rehash: bool = False, **values: object) -> None:
    """Change an entry's columns; with ``rehash`` its own hash is recomputed too, as a forger
    who knows the scheme would (then only a link to it or from it can give it away)."""
    _disable_guard(session)
    entry = _entry(session, seq)
    session.execute(sa.update(AuditEntry).where(AuditEntry.id == entry.id).values(**values))
    session.expire_all()
    if rehash:
        entry = _entry(session, seq)
        forged = entry_hash(entry)
        session.execute(sa.update(AuditEntry).where(AuditEntry.id == entry.id).values(hash=forged))
        session.expire_all()


def _checkpoint(session: Session) -> AuditCheckpoint:
    session.expire_all()
    return session.scalars(sa.select(AuditCheckpoint).where(AuditCheckpoint.chain == CHAIN)).one()


def test_a_read_verifies_the_new_entries_and_advances_the_checkpoint(session: Session) -> None:
    _append(session, 5)
    assert _checkpoint(session).verified_seq == 0  # made with the chain's first entry
    first = check_chain(session, CHAIN)
    assert first.ok and first.verified_through_seq == 5 and first.entries == 5
    point = _checkpoint(session)
    assert (point.verified_seq, point.verified_hash) == (5, _entry(session, 5).hash)
    assert point.verified_at is not None

    _append(session, 2)
    repo = AuditRepository.from_session(session)
    # What the next read re-hashes: the checkpoint's entry and the two new ones, not the chain.
    assert repo.verify_after(CHAIN, 5, point.verified_hash).entries == 3
    second = check_chain(session, CHAIN)
    assert second.ok and second.verified_through_seq == 7
    assert _checkpoint(session).verified_seq == 7
    assert repo.verify_after(CHAIN, 7, _checkpoint(session).verified_hash).entries == 1


def test_an_edit_after_the_checkpoint_is_caught_by_the_next_read(session: Session) -> None:
    _append(session, 5)
    check_chain(session, CHAIN)
    _append(session, 3)
    _edit(session, 7, action="forged")
    result = check_chain(session, CHAIN)
    assert not result.ok and result.first_bad_seq == 7
    assert result.reason == "hash does not match content"
    point = _checkpoint(session)
    assert point.verified_seq == 6  # up to the last intact entry, not past the break
    assert point.broken_seq == 7
    status = stored_verification(session, CHAIN)  # what status shows, re-hashing nothing
    assert not status.ok and status.first_bad_seq == 7


def test_a_forged_entry_that_does_not_link_to_the_checkpoint_is_caught(session: Session) -> None:
    """The entry after the checkpoint rewritten with a consistent hash of its own: only its link
    to the checkpoint's hash gives it away."""
    _append(session, 5)
    check_chain(session, CHAIN)
    _append(session, 2)
    _edit(session, 6, rehash=True, prev_hash="f" * 64)
    result = check_chain(session, CHAIN)
    assert not result.ok and result.first_bad_seq == 6
    assert result.reason == "prev_hash does not link"
    assert _checkpoint(session).verified_seq == 5


def test_the_checkpoint_entry_itself_is_rechecked(session: Session) -> None:
    """The checkpoint's own entry rewritten (its hash recomputed, so that it still matches its
    content): it no longer has the hash the checkpoint recorded."""
    _append(session, 5)
    check_chain(session, CHAIN)
    _edit(session, 5, rehash=True, action="forged")
    result = check_chain(session, CHAIN)
    assert not result.ok and result.first_bad_seq == 5
    assert result.reason == "the checkpoint's entry changed"


def test_an_edit_behind_the_checkpoint_is_caught_by_the_full_verification(
    session: Session,
) -> None:
    _append(session, 6)
    check_chain(session, CHAIN)
    _edit(session, 2, action="forged")
    newest = AuditRepository.from_session(session).entries(CHAIN, after_seq=4)
    # A read of the newest entries does not look behind the checkpoint: that is the point.
    assert check_chain(session, CHAIN, returned=newest).ok

    full = verify_fully(session, CHAIN)
    assert not full.ok and full.first_bad_seq == 2
    assert full.full_verification is not None
    assert not full.full_verification.ok and full.full_verification.through_seq == 2
    # From now on every read and the status report it, whatever page they read.
    later = check_chain(session, CHAIN, returned=newest)
    assert not later.ok and later.first_bad_seq == 2
    assert later.reason == "hash does not match content"
    assert not stored_verification(session, CHAIN).ok


def test_the_entries_a_read_returns_are_rehashed(session: Session) -> None:
    _append(session, 6)
    check_chain(session, CHAIN)
    _edit(session, 2, action="forged")
    page = AuditRepository.from_session(session).entries(CHAIN, after_seq=0, limit=3)
    result = check_chain(session, CHAIN, returned=page)
    assert not result.ok and result.first_bad_seq == 2


def test_a_full_verification_records_its_result_and_moves_the_checkpoint(
    session: Session,
) -> None:
    _append(session, 4)
    full = verify_fully(session, CHAIN)
    assert full.ok and full.verified_through_seq == 4
    assert full.full_verification is not None
    assert full.full_verification.ok and full.full_verification.through_seq == 4
    point = _checkpoint(session)
    assert point.verified_seq == 4 and point.full_ok and point.full_at is not None
    status = stored_verification(session, CHAIN)
    assert status.ok and status.full_verification == full.full_verification


def test_housekeeping_verifies_the_chain_verified_longest_ago(session: Session) -> None:
    _append(session, 2)
    _append(session, 2, chain="model:other")
    # Other tests' chains may be in this database: run until both of ours are done.
    done = set()
    for _ in range(100):
        chain = verify_due(session, 3600)
        if chain is None:
            break
        done.add(chain)
    assert {CHAIN, "model:other"} <= done
    assert verify_due(session, 3600) is None  # nothing due until the interval passes
    assert verify_due(session, 0) is not None


def test_a_certificate_finds_its_entries_by_reference(session: Session) -> None:
    repo = AuditRepository.from_session(session)
    repo.append(CHAIN, actor="a", action="deletion.received", payload={"deletion_id": "d1"})
    repo.append(CHAIN, actor="a", action="other", payload={"deletion_id": "d2"})
    repo.append(CHAIN, actor="a", action="layers.activated", payload={"job_id": "j1"})
    repo.append(CHAIN, actor="a", action="x", payload={"deletion_ids": ["d2", "d1"]})
    found = repo.about(CHAIN, ["deletion:d1", "job:j1"])
    assert [e.seq for e in found] == [1, 3, 4]
    assert repo.about("model:elsewhere", ["deletion:d1"]) == []


def test_the_migration_fills_checkpoints_and_refs_for_existing_entries(
    fresh_db: FreshDatabase,
) -> None:
    """Entries written before the migration: each chain gets a checkpoint at its start (the
    first read or full verification covers the rest) and each entry the refs it names."""
    url = fresh_db.empty_url()
    migrate.upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with unit_of_work(factory) as session:
        repo = AuditRepository.from_session(session)
        repo.append("model:a", actor="a", action="x", payload={"deletion_id": "d1"})
        repo.append("model:a", actor="a", action="y", payload={"job_id": "j1", "n": 1})
        repo.append("model:b", actor="a", action="z", payload={"deletion_ids": ["d1", "d2"]})
    with engine.connect() as conn:
        written = set(conn.execute(sa.text("SELECT ref, entry_id FROM audit_refs")).all())
    assert len(written) == 4

    script = ScriptDirectory.from_config(migrate.alembic_config(url))
    revision = script.get_revision(REVISION)
    assert revision is not None and isinstance(revision.down_revision, str)
    migrate.downgrade(url, revision.down_revision)
    assert "audit_refs" not in sa.inspect(engine).get_table_names()
    migrate.upgrade(url)
    with engine.connect() as conn:
        assert set(conn.execute(sa.text("SELECT ref, entry_id FROM audit_refs")).all()) == written
        points = conn.execute(
            sa.text("SELECT chain, verified_seq FROM audit_checkpoints ORDER BY chain")
        ).all()
    assert [tuple(p) for p in points] == [("model:a", 0), ("model:b", 0)]
    with unit_of_work(factory) as session:
        assert check_chain(session, "model:a").verified_through_seq == 2
    migrate.check(url)
    engine.dispose()


def test_the_cli_verifies_every_chain_and_fails_on_a_broken_one(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "configure", lambda *_: None)  # this process's logging stays
    monkeypatch.setenv("UNLEARN_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("UNLEARN_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    try:
        with unit_of_work(factory) as session:
            _append(session, 3)
            _append(session, 2, chain="model:other")
        ok = CliRunner().invoke(main, ["audit", "verify"])
        assert ok.exit_code == 0, ok.output
        assert f"{CHAIN}: ok through seq 3" in ok.output
        assert "model:other: ok through seq 2" in ok.output

        with unit_of_work(factory) as session:
            _edit(session, 2, action="forged")
            if session.get_bind().dialect.name == "postgresql":  # the guard back on
                session.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update"))
        broken = CliRunner().invoke(main, ["audit", "verify", "--model", "checkpoints"])
        assert broken.exit_code != 0  # not a model id
        with unit_of_work(factory) as session:
            assert not verify_fully(session, CHAIN).ok
            assert stored_verification(session, CHAIN).first_bad_seq == 2
        again = CliRunner().invoke(main, ["audit", "verify"])
        assert again.exit_code == 1
        assert f"{CHAIN}: BROKEN at seq 2" in again.output
    finally:
        engine.dispose()
        get_settings.cache_clear()


def test_a_housekeeping_round_verifies_a_due_chain(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    try:
        with unit_of_work(factory) as session:
            _append(session, 3)
        housekeep(factory, settings.model_copy(update={"audit_full_verify_interval_s": 0}))
        with unit_of_work(factory) as session:
            assert stored_verification(session, CHAIN).full_verification is None  # off
        housekeep(factory, settings)
        with unit_of_work(factory) as session:
            full = stored_verification(session, CHAIN).full_verification
        assert full is not None
        assert full.ok
        assert full.through_seq == 3
    finally:
        engine.dispose()


def test_a_chain_read_before_its_first_entry_still_takes_entries(session: Session) -> None:
    """A status or audit read of a new model makes the checkpoint; the first append keeps it."""
    assert check_chain(session, CHAIN).verified_through_seq == 0
    _append(session, 2)
    assert check_chain(session, CHAIN).verified_through_seq == 2
