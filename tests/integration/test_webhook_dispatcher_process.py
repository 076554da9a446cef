"""A dispatcher killed mid-delivery loses no event: ``unlearn webhooks deliver`` (a child
process, SQLite and PostgreSQL) is SIGKILLed while the receiver holds its POST open; its claim
is a lease, and a second dispatcher delivers the event once the lease has ended, not before.
The metrics any API process exposes count the deliveries these other processes made."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from service.db.engine import make_engine, make_session_factory, unit_of_work
from service.db.repositories import TenantRepository, WebhookRepository
from service.observability.metrics import LineageCollector
from service.webhooks import events, service
from service.webhooks.schemas import WebhookCreate
from tests.conftest import FreshDatabase
from tests.integration.receiver import Receiver
from tests.integration.services import stop, unlearn, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("processes")]
LEASE_S = 4.0


def _webhook_figures(factory: sessionmaker[Session]) -> dict[tuple[str, str | None], float]:
    """The webhook samples of a scrape, by (name, state)."""
    return {
        (sample.name, sample.labels.get("state")): sample.value
        for family in LineageCollector(factory).collect()
        for sample in family.samples
        if sample.name.startswith("unlearn_webhook")
    }


def test_a_killed_dispatcher_loses_no_event(fresh_db: FreshDatabase, tmp_path: Path) -> None:
    url = fresh_db.url()
    engine = make_engine(url)
    factory = make_session_factory(engine)
    receiver = Receiver(tmp_path, script=["hang"])  # then 200
    with unit_of_work(factory) as session:
        tenant = TenantRepository.from_session(session).create("a")
        body = WebhookCreate(url=receiver.url, events=["deletion.completed"], description=None)
        hook = service.create_webhook(session, tenant.id, body, production=False, max_endpoints=1)
        event = events.emit(session, tenant.id, "deletion.completed", {"deletion": {"id": "d"}})
        assert event is not None
    env = {
        "UNLEARN_DATA_DIR": str(tmp_path),
        "UNLEARN_DATABASE_URL": url,
        "UNLEARN_LOG_FORMAT": "json",
        "UNLEARN_WEBHOOK_TIMEOUT_S": "3",
        "UNLEARN_WEBHOOK_LEASE_S": str(LEASE_S),
        "UNLEARN_WEBHOOK_POLL_S": "0.1",
        "UNLEARN_WEBHOOK_BACKOFF_S": "0.1",
    }
    before = _webhook_figures(factory)
    assert before[("unlearn_webhook_deliveries", "pending")] == 1
    assert before[("unlearn_webhook_deliveries", "delivered")] == 0
    assert before[("unlearn_webhook_oldest_pending_seconds", None)] > 0
    first = unlearn(["webhooks", "deliver"], env)
    second = None
    try:
        (held,) = receiver.wait_for(1, timeout_s=60)
        os.killpg(first.pid, signal.SIGKILL)  # mid-POST: the attempt is never recorded
        stop(first)
        second = unlearn(["webhooks", "deliver"], env)
        requests = receiver.wait_for(2, timeout_s=60)
        assert len(requests) == 2
        assert requests[1]["headers"]["Unlearn-Event-Id"] == event.id
        assert requests[1]["body"] == held["body"]
        assert json.loads(requests[1]["body"])["type"] == "deletion.completed"
        # Not before the lease ended (the claim came just before the first request).
        assert requests[1]["at"] - held["at"] >= LEASE_S - 0.5

        def delivered() -> bool:
            with factory() as session:
                webhooks = WebhookRepository.from_session(session)
                (delivery,) = webhooks.deliveries_of(hook.id, limit=10)
                return delivery.state.value == "delivered"

        wait_for(delivered, 20, "the delivery to be recorded")
        with factory() as session:
            webhooks = WebhookRepository.from_session(session)
            (delivery,) = webhooks.deliveries_of(hook.id, limit=10)
            assert delivery.attempt_count == 1 and delivery.last_status_code == 200
            assert delivery.leased_until is None
            (attempt,) = webhooks.attempts(delivery.id)
            assert attempt.status_code == 200
        after = _webhook_figures(factory)
        assert after[("unlearn_webhook_deliveries", "pending")] == 0
        assert after[("unlearn_webhook_deliveries", "delivered")] == 1
        assert after[("unlearn_webhook_oldest_pending_seconds", None)] == 0
    finally:
        output = stop(second) if second is not None else ""
        receiver.stop()
        engine.dispose()
    assert "Traceback" not in output, output[-4000:]
