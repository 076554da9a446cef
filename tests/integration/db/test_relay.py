"""The outbox relay: a broker outage delays messages without losing them, none is sent twice."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from service.db.engine import unit_of_work
from service.db.models import OutboxMessage
from service.db.models.base import utcnow
from service.db.repositories import OutboxRepository
from service.relay import OutboxRelay, backoff, relay_once
from tests.integration.services import wait_for

pytestmark = pytest.mark.integration


class Broker:
    def __init__(self) -> None:
        self.up = False
        self.sent: list[dict[str, object]] = []

    def publish(self, message: OutboxMessage) -> None:
        if not self.up:
            raise ConnectionError("broker down")
        self.sent.append(message.payload)


def _queue(factory: sessionmaker[Session], n: int) -> None:
    with unit_of_work(factory) as session:
        for i in range(n):
            OutboxRepository.from_session(session).add("t", "training", {"job_id": str(i)})


def test_an_outage_delays_messages_and_loses_none(factory: sessionmaker[Session]) -> None:
    broker = Broker()
    _queue(factory, 3)
    assert relay_once(factory, broker.publish) == 0
    with unit_of_work(factory) as session:
        outbox = OutboxRepository.from_session(session)
        assert outbox.pending_count() == 3
        # The first message waits out its back-off; the rest were not tried.
        assert len(outbox.due()) == 2 and len(outbox.due(now=utcnow() + backoff(1))) == 3
    broker.up = True
    later = utcnow() + timedelta(minutes=5)
    with unit_of_work(factory) as session:  # as if the back-off had passed
        for message in OutboxRepository.from_session(session).due(now=later):
            message.available_at = utcnow()
    assert relay_once(factory, broker.publish) == 3
    assert relay_once(factory, broker.publish) == 0
    assert [p["job_id"] for p in broker.sent] == ["0", "1", "2"]


def test_the_relay_thread_sends_when_woken(factory: sessionmaker[Session]) -> None:
    broker = Broker()
    broker.up = True
    relay = OutboxRelay(factory, broker.publish, interval_s=60)
    relay.start()
    try:
        _queue(factory, 2)
        relay.wake()
        wait_for(lambda: len(broker.sent) == 2, 10, "the relay")
    finally:
        relay.stop()
