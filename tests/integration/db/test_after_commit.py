"""The commit wakes the relay and the webhook dispatcher (``service.db.after_commit``): a
transaction that queued outbox messages wakes the relay, one that wrote deliveries wakes the
dispatcher, once each, after it committed; a rolled-back one and one that wrote neither wake
nothing."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from service.db import after_commit
from service.db.engine import unit_of_work
from service.db.models import Webhook
from service.db.repositories import OutboxRepository, TenantRepository
from service.webhooks import events

pytestmark = pytest.mark.integration


class Woken:
    """A relay and a dispatcher that record their wakes (and whether a commit came first)."""

    def __init__(self) -> None:
        self.relay: list[bool] = []  # housekeep, per wake
        self.dispatcher = 0

    def wake(self, *, housekeep: bool = False) -> None:
        self.relay.append(housekeep)


class Dispatcher:
    def __init__(self, woken: Woken) -> None:
        self.woken = woken

    def wake(self) -> None:
        self.woken.dispatcher += 1


@pytest.fixture
def woken(factory: sessionmaker[Session]) -> Woken:
    woken = Woken()
    after_commit.install(factory, relay=woken, dispatcher=Dispatcher(woken))
    return woken


def _webhook(session: Session) -> Webhook:
    tenant = TenantRepository.from_session(session).create("a")
    webhook = Webhook(
        tenant_id=tenant.id, url="http://127.0.0.1:9/", events=["model.ready"], secret="whsec_x"
    )
    session.add(webhook)
    session.flush()
    return webhook


def test_queued_messages_wake_the_relay_after_the_commit(
    factory: sessionmaker[Session], woken: Woken
) -> None:
    with unit_of_work(factory) as session:
        OutboxRepository.from_session(session).add("t", "training", {"n": 1})
        OutboxRepository.from_session(session).add("t", "training", {"n": 2})
        session.flush()
        assert woken.relay == []  # not before the commit
    assert (woken.relay, woken.dispatcher) == ([False], 0)


def test_deliveries_wake_the_dispatcher_after_the_commit(
    factory: sessionmaker[Session], woken: Woken
) -> None:
    with unit_of_work(factory) as session:
        webhook = _webhook(session)
    assert (woken.relay, woken.dispatcher) == ([], 0)  # an endpoint alone delivers nothing
    with unit_of_work(factory) as session:
        events.ping(session, session.merge(webhook))
        session.flush()
        assert woken.dispatcher == 0
    assert (woken.relay, woken.dispatcher) == ([], 1)


def _fail_after_queueing(factory: sessionmaker[Session]) -> None:
    with unit_of_work(factory) as session:
        OutboxRepository.from_session(session).add("t", "training", {"n": 1})
        raise RuntimeError("the request failed")


def test_a_rolled_back_transaction_wakes_nothing(
    factory: sessionmaker[Session], woken: Woken
) -> None:
    with factory() as session:
        OutboxRepository.from_session(session).add("t", "training", {"n": 1})
        session.flush()
        session.rollback()
        session.commit()  # the next transaction of the session wrote nothing
    assert (woken.relay, woken.dispatcher) == ([], 0)
    with pytest.raises(RuntimeError, match="the request failed"):
        _fail_after_queueing(factory)
    assert (woken.relay, woken.dispatcher) == ([], 0)


def test_savepoints_wake_nothing_and_keep_the_marks(
    factory: sessionmaker[Session], woken: Woken
) -> None:
    """SQLAlchemy reports a SAVEPOINT's commit and rollback as ``after_commit`` and
    ``after_rollback`` too: neither wakes anybody early, nor drops what the transaction asked
    for; its one real commit wakes the relay once."""
    with unit_of_work(factory) as session:
        OutboxRepository.from_session(session).add("t", "training", {"n": 1})
        with session.begin_nested():
            OutboxRepository.from_session(session).add("t", "training", {"n": 2})
        assert woken.relay == []
        savepoint = session.begin_nested()
        session.flush()
        savepoint.rollback()
        assert woken.relay == []
    assert (woken.relay, woken.dispatcher) == ([False], 0)
