"""The audit log: hash-chained, append-only in the database, tampering detected."""

from __future__ import annotations

import itertools

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from service.db.models import AuditEntry
from service.db.repositories import AuditRepository
from service.db.repositories.audit import GENESIS_HASH


def _disable_guard(session: Session) -> None:
    """Simulate an attacker with DDL rights (the change is rolled back with the test)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update"))
    else:
        session.execute(sa.text("DROP TRIGGER audit_log_no_update"))
        session.execute(sa.text("DROP TRIGGER audit_log_no_delete"))


@pytest.fixture
def chain(session: Session) -> list[AuditEntry]:
    repo = AuditRepository.from_session(session)
    return [
        repo.append("m1", actor="key:abc", action=f"step{i}", payload={"n": i, "ids": ["h1"]})
        for i in range(4)
    ]


def test_entries_link_and_verify(session: Session, chain: list[AuditEntry]) -> None:
    repo = AuditRepository.from_session(session)
    assert [e.seq for e in chain] == [1, 2, 3, 4]
    assert chain[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(chain))
    session.expire_all()  # verify what the database gives back
    assert repo.verify("m1").ok and repo.verify("m1").entries == 4
    other = repo.append("m2", actor="a", action="x", payload={})
    assert other.seq == 1 and other.prev_hash == GENESIS_HASH
    assert [e.seq for e in repo.entries("m1", after_seq=2)] == [3, 4]


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_log SET action = 'forged'", "DELETE FROM audit_log"],
)
def test_database_refuses_update_and_delete(
    session: Session, chain: list[AuditEntry], statement: str
) -> None:
    with pytest.raises(DBAPIError, match="append-only"), session.begin_nested():
        session.execute(sa.text(statement))


def test_edited_entry_breaks_verification(session: Session, chain: list[AuditEntry]) -> None:
    _disable_guard(session)
    session.execute(
        sa.update(AuditEntry).where(AuditEntry.id == chain[1].id).values(action="forged")
    )
    session.expire_all()
    result = AuditRepository.from_session(session).verify("m1")
    assert not result.ok and result.first_bad_seq == 2


def test_removed_entry_breaks_verification(session: Session, chain: list[AuditEntry]) -> None:
    _disable_guard(session)
    session.execute(sa.delete(AuditEntry).where(AuditEntry.id == chain[2].id))
    session.expire_all()
    result = AuditRepository.from_session(session).verify("m1")
    assert not result.ok and result.first_bad_seq == 4
