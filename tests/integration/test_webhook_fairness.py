"""Fair webhook delivery: a tenant whose endpoints never answer does not delay another
tenant's events. Real receivers on loopback (``tests/integration/receiver.py``), the app's own
dispatcher (8 POST slots), SQLite and PostgreSQL.

The bound: a tenant holds at most ``UNLEARN_WEBHOOK_TENANT_IN_FLIGHT`` POSTs in flight (here
and by default 4 of the dispatcher's 8 slots), and a claim serves first the tenant with the
fewest in flight; so another tenant's event is claimed as soon as it is committed (the
dispatcher's next look, ``poll_s``) and arrives after its own POST, long before any silent
endpoint's attempt times out (``timeout_s``, 5 s here). Asserted: under ``BOUND_S`` = 2 s.
When two such tenants hold every slot, the waiting tenant gets the first slot that frees (it has
none in flight, they have their share): asserted under ``timeout_s`` + 1.5 s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.db.engine import make_engine, make_session_factory, unit_of_work
from service.db.models import Role
from service.db.repositories import ApiKeyRepository, TenantRepository
from service.settings import Settings
from service.webhooks import events
from tests.conftest import FreshDatabase
from tests.integration.api import Api, issue_keys
from tests.integration.receiver import Receiver

pytestmark = pytest.mark.integration
SILENT_ENDPOINTS = 30
BOUND_S = 2.0
TIMEOUT_S = 5.0
SHARE = 4  # UNLEARN_WEBHOOK_TENANT_IN_FLIGHT (its default)


def _emit(settings: Settings, tenant: str) -> tuple[str, float]:
    """One `deletion.completed` of ``tenant``, committed as a worker would; its id and the
    time of the commit."""
    engine = make_engine(settings.database_url)
    with unit_of_work(make_session_factory(engine)) as session:
        tenant_id = TenantRepository.from_session(session).by_name(tenant).id
        event = events.emit(session, tenant_id, "deletion.completed", {"deletion": {}})
        assert event is not None
        event_id = event.id
    committed = time.time()
    engine.dispose()
    return event_id, committed


def _register(admin: Api, url: str) -> dict[str, Any]:
    body = {"url": url, "events": ["deletion.completed"]}
    created: dict[str, Any] = admin.ok(admin.post("/webhooks", body), 201)
    return created


def _settings(fresh_db: FreshDatabase, tmp_path: Path, **extra: Any) -> Settings:
    """Short attempts, a quick poll, and ``SHARE`` of the dispatcher's slots per tenant."""
    return Settings(
        data_dir=tmp_path,
        database_url=fresh_db.url(),
        webhook_timeout_s=TIMEOUT_S,
        webhook_lease_s=TIMEOUT_S + 5,
        webhook_poll_s=0.05,
        webhook_tenant_in_flight=SHARE,
        **extra,
    )


def test_a_tenant_with_silent_endpoints_does_not_delay_another_tenants_event(
    fresh_db: FreshDatabase, tmp_path: Path, record_property: Any
) -> None:
    settings = _settings(fresh_db, tmp_path, webhook_max_endpoints=SILENT_ENDPOINTS)
    silent = Receiver(tmp_path, then="hang")  # accepts every POST and never answers
    healthy = Receiver(tmp_path)
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            admins = issue_keys(settings, Role.admin)
            noisy, quiet = Api(client, admins["a"]), Api(client, admins["b"])
            for i in range(SILENT_ENDPOINTS):
                _register(noisy, f"{silent.url}/{i}")
            _register(quiet, healthy.url)
            _emit(settings, "a")  # 30 deliveries, each holding a slot for the whole timeout
            silent.wait_for(SHARE)
            time.sleep(0.5)  # the dispatcher has had every chance to fill its slots with them
            in_flight = len(silent.requests())
            event_id, committed = _emit(settings, "b")
            (arrived,) = healthy.wait_for(1, timeout_s=3 * TIMEOUT_S * SILENT_ENDPOINTS / 8)
            latency = arrived["at"] - committed
            record_property("healthy_latency_s", round(latency, 3))
            print(f"healthy tenant's event arrived {latency:.3f} s after its commit")
            assert latency < BOUND_S, latency
            assert arrived["headers"]["webhook-id"] == event_id
            # The noisy tenant never had more than its share in flight.
            assert in_flight == SHARE
            assert len(silent.requests()) <= SHARE
    finally:
        silent.stop()
        healthy.stop()


def test_when_every_slot_is_held_the_next_free_one_goes_to_the_waiting_tenant(
    fresh_db: FreshDatabase, tmp_path: Path, record_property: Any
) -> None:
    """Two tenants with silent endpoints fill all 8 slots (4 each); a third tenant's event waits
    for the first slot that frees (a silent attempt timing out), and gets it before either
    noisy tenant's next delivery. The bound: ``TIMEOUT_S`` + 1.5 s after its commit."""
    settings = _settings(fresh_db, tmp_path)
    silent = Receiver(tmp_path, then="hang")
    healthy = Receiver(tmp_path)
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            admins = issue_keys(settings, Role.admin)
            engine = make_engine(settings.database_url)
            with unit_of_work(make_session_factory(engine)) as session:
                tenant_c = TenantRepository.from_session(session).create("c")
                token_c = ApiKeyRepository.from_session(session).issue(tenant_c.id, "k", Role.admin)
            engine.dispose()
            noisy = [Api(client, admins["a"]), Api(client, token_c.token)]
            for n, admin in enumerate(noisy):
                for i in range(10):
                    _register(admin, f"{silent.url}/{n}/{i}")
            _register(Api(client, admins["b"]), healthy.url)
            _emit(settings, "a")
            _emit(settings, "c")
            silent.wait_for(2 * SHARE)
            time.sleep(0.5)
            assert len(silent.requests()) == 2 * SHARE  # every slot held
            _, committed = _emit(settings, "b")
            (arrived,) = healthy.wait_for(1, timeout_s=60)
            latency = arrived["at"] - committed
            record_property("healthy_latency_all_slots_held_s", round(latency, 3))
            print(f"with every slot held, it arrived {latency:.3f} s after its commit")
            assert latency < TIMEOUT_S + 1.5, latency
    finally:
        silent.stop()
        healthy.stop()
