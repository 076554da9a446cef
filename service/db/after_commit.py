"""What a transaction asks for once it has committed: the outbox relay and the webhook
dispatcher are woken by the commit itself, never by the code that wrote their rows.

The writer marks its session (``relay``: it added outbox messages, or ``housekeep``: a deletion
completed, so its artifacts should be collected at once; ``deliver``: it wrote webhook
deliveries due now); :func:`install` listens for commits on a session factory and wakes that
process's relay and dispatcher when the committed transaction was marked (its outermost
commit: a SAVEPOINT's is not one). A rolled-back transaction's marks are dropped: nothing it
wrote exists. A process without a listener (a Celery worker) leaves the marks unread; its rows
are found by the relay's and the dispatcher's polls.
"""

from __future__ import annotations

from typing import Final, Protocol

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

RELAY: Final = "after_commit.relay"
HOUSEKEEP: Final = "after_commit.housekeep"
DELIVER: Final = "after_commit.deliver"
_MARKS: Final = (RELAY, HOUSEKEEP, DELIVER)


class Relay(Protocol):
    def wake(self, *, housekeep: bool = False) -> None: ...


class Dispatcher(Protocol):
    def wake(self) -> None: ...


def relay(session: Session, *, housekeep: bool = False) -> None:
    """After this transaction commits, relay its outbox messages now (``housekeep``: and
    housekeep in that round)."""
    session.info[RELAY] = True
    if housekeep:
        session.info[HOUSEKEEP] = True


def deliver(session: Session) -> None:
    """After this transaction commits, deliver its webhook deliveries now."""
    session.info[DELIVER] = True


def install(
    factory: sessionmaker[Session],
    *,
    relay: Relay | None = None,
    dispatcher: Dispatcher | None = None,
) -> None:
    """Wake ``relay`` and ``dispatcher`` after each commit, on ``factory``'s sessions, of a
    transaction that asked for them. The wake runs inside ``commit()``: a request's answer,
    sent after its commit, is sent after the wake too."""

    @event.listens_for(factory, "after_commit")
    def _committed(session: Session) -> None:
        if session.in_nested_transaction():  # a SAVEPOINT's: the transaction goes on
            return
        marks = {mark: session.info.get(mark, False) for mark in _MARKS}
        if relay is not None and (marks[RELAY] or marks[HOUSEKEEP]):
            relay.wake(housekeep=marks[HOUSEKEEP])
        if dispatcher is not None and marks[DELIVER]:
            dispatcher.wake()

    @event.listens_for(factory, "after_transaction_end")
    def _ended(session: Session, transaction: SessionTransaction) -> None:
        forget(session, transaction, _MARKS)


def forget(session: Session, transaction: SessionTransaction, keys: tuple[str, ...]) -> None:
    """Drop ``keys`` from ``session.info`` when ``transaction`` is the session's outermost
    (committed: read already, or rolled back: nothing it wrote exists); a SAVEPOINT's end leaves
    them (SQLAlchemy fires ``after_commit`` and ``after_rollback`` for SAVEPOINTs too)."""
    if transaction.parent is None:
        for key in keys:
            session.info.pop(key, None)
