"""Webhooks over HTTP on SQLite and PostgreSQL, delivered by the app's dispatcher to a real
receiver process on loopback (``tests/integration/receiver.py``): registration and its
refusals, retries with back-off until a 2xx, a final `failed`, redelivery, secret rotation,
and deletion cancelling what was pending. Back-off, timeout and lease are a fraction of a
second here."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.app import create_app
from service.db.engine import make_engine, make_session_factory, unit_of_work
from service.db.models import Role, WebhookEvent
from service.db.repositories import TenantRepository
from service.deletions import views as deletion_views
from service.settings import Environment, Settings
from service.webhooks import events, signing
from tests.conftest import FreshDatabase
from tests.integration.api import TINY_MODEL, Api, issue_keys, problem, samples
from tests.integration.receiver import Receiver
from tests.integration.services import wait_for

pytestmark = pytest.mark.integration
FAST: dict[str, Any] = {
    "webhook_backoff_s": 0.05,
    "webhook_backoff_max_s": 0.2,
    "webhook_max_attempts": 3,
    "webhook_poll_s": 0.05,
    "webhook_timeout_s": 0.5,
    "webhook_lease_s": 1.0,
}


@pytest.fixture
def settings(fresh_db: FreshDatabase, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, database_url=fresh_db.url(), **FAST)


@pytest.fixture
def admin(client: TestClient, settings: Settings) -> Api:
    return Api(client, issue_keys(settings, Role.admin)["a"])


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[list[Receiver]]:
    started: list[Receiver] = []
    yield started
    for receiver in started:
        receiver.stop()


def _emit(settings: Settings, type_: events.EventType, n: int = 1) -> list[str]:
    """Commit ``n`` events of tenant a (as a state change would), as a worker process does:
    the dispatcher finds them when it next looks."""
    engine = make_engine(settings.database_url)
    ids = []
    with unit_of_work(make_session_factory(engine)) as session:
        tenant = TenantRepository.from_session(session).by_name("a")
        for i in range(n):
            event = events.emit(session, tenant.id, type_, {"deletion": {"n": i}})
            if event is not None:
                ids.append(event.id)
    engine.dispose()
    return ids


def _register(admin: Api, url: str, events_: list[str] | None = None) -> dict[str, Any]:
    body = {"url": url, "events": events_ or ["deletion.completed"], "description": "test"}
    created: dict[str, Any] = admin.ok(admin.post("/webhooks", body), 201)
    return created


def _verified(request: dict[str, Any], *secrets: str) -> list[str]:
    """The secrets (of ``secrets``) whose signature is in the request's header."""
    header = request["headers"]["Unlearn-Signature"]
    parts = [p.split("=", 1) for p in header.split(",")]
    (t,) = [v for k, v in parts if k == "t"]
    v1 = [v for k, v in parts if k == "v1"]
    body = request["body"].encode()
    return [s for s in secrets if signing.signature(s, int(t), body) in v1]


def _deliveries(admin: Api, webhook_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = admin.ok(admin.get(f"/webhooks/{webhook_id}/deliveries"))
    return found


def _settled(admin: Api, webhook_id: str, n: int, state: str) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]]:
        found = _deliveries(admin, webhook_id)
        return found if len(found) == n and all(d["state"] == state for d in found) else []

    return wait_for(done, 30, f"{n} deliveries {state}")


def test_register_read_and_delete(admin: Api, settings: Settings) -> None:
    created = _register(admin, "http://127.0.0.1:9/hook", ["deletion.completed", "model.ready"])
    assert created["secret"].startswith("whsec_")
    assert set(created) == {
        "id",
        "url",
        "events",
        "description",
        "created_at",
        "secret_rotated_at",
        "secret",
    }
    listed = admin.ok(admin.get("/webhooks"))
    assert [w["id"] for w in listed] == [created["id"]]
    assert "secret" not in listed[0] and created["secret"] not in str(listed)
    one = admin.ok(admin.get(f"/webhooks/{created['id']}"))
    assert "secret" not in one and one["events"] == ["deletion.completed", "model.ready"]

    # Another tenant's admin does not see it; an app key may not manage webhooks.
    other = issue_keys(settings, Role.admin)["b"]
    problem(admin.client.get(f"/webhooks/{created['id']}", headers=_auth(other)), 404)
    app_key = issue_keys(settings)["a"]
    problem(admin.client.get("/webhooks", headers=_auth(app_key)), 403)

    assert (
        admin.client.delete(f"/webhooks/{created['id']}", headers=admin.headers).status_code == 204
    )
    problem(admin.get(f"/webhooks/{created['id']}"), 404)
    assert admin.ok(admin.get("/webhooks")) == []


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "body",
    [
        {"url": "http://127.0.0.1:9/", "events": ["deletion.exploded"]},
        {"url": "http://127.0.0.1:9/", "events": []},
        {"url": "ftp://127.0.0.1/", "events": ["model.ready"]},
        {"url": "http://10.0.0.1/", "events": ["model.ready"]},  # private, even in development
        {"url": "http://169.254.169.254/latest", "events": ["model.ready"]},
        {"url": "http://u:p@127.0.0.1/", "events": ["model.ready"]},
        {"url": "not a url", "events": ["model.ready"]},
        {"url": "http://127.0.0.1/", "events": ["model.ready"], "extra": 1},
    ],
)
def test_bad_registrations_are_422_problems(admin: Api, body: dict[str, Any]) -> None:
    problem(admin.post("/webhooks", body), 422)
    assert admin.ok(admin.get("/webhooks")) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/",  # http
        "https://127.0.0.1/hook",  # loopback literal
        "https://localhost/hook",  # a name resolving to loopback
        "https://10.0.0.1/hook",
        "https://[::1]/hook",
        "https://[fd00::1]/hook",
        "https://169.254.169.254/hook",
    ],
)
def test_production_refuses_http_loopback_and_private_urls(settings: Settings, url: str) -> None:
    # model_copy: the environment alone changes (the embedded database stays, for the test).
    production = settings.model_copy(update={"environment": Environment.production})
    with TestClient(create_app(production), raise_server_exceptions=False) as client:
        admin = Api(client, issue_keys(settings, Role.admin)["a"])
        body = problem(admin.post("/webhooks", {"url": url, "events": ["model.ready"]}), 422)
        assert "refused" in body["detail"]
        assert admin.ok(admin.get("/webhooks")) == []


def test_500_twice_then_200_is_delivered_on_the_third_attempt(
    admin: Api, settings: Settings, tmp_path: Path, receivers: list[Receiver]
) -> None:
    receiver = Receiver(tmp_path, script=["500", "500", "200"])
    receivers.append(receiver)
    webhook = _register(admin, receiver.url)
    (event_id,) = _emit(settings, "deletion.completed")
    (delivery,) = _settled(admin, webhook["id"], 1, "delivered")
    assert delivery["attempt_count"] == 3 and delivery["last_status_code"] == 200
    assert delivery["event_id"] == event_id and delivery["event_type"] == "deletion.completed"
    detail = admin.ok(admin.get(f"/webhook-deliveries/{delivery['id']}"))
    assert [a["status_code"] for a in detail["attempts"]] == [500, 500, 200]
    assert [a["error"] for a in detail["attempts"]] == ["HTTP 500", "HTTP 500", None]
    requests = receiver.wait_for(3)
    assert len(requests) == 3
    for request in requests:
        assert request["headers"]["Unlearn-Event-Id"] == event_id
        assert request["headers"]["User-Agent"] == "unlearn-webhooks/1"
        assert request["headers"]["Content-Type"] == "application/json"
        assert _verified(request, webhook["secret"]) == [webhook["secret"]]


@pytest.mark.parametrize("answer", ["500", "hang", "drip"])
def test_a_receiver_that_never_succeeds_ends_failed(
    admin: Api,
    settings: Settings,
    tmp_path: Path,
    receivers: list[Receiver],
    answer: str,
) -> None:
    receiver = Receiver(tmp_path, then=answer)
    receivers.append(receiver)
    webhook = _register(admin, receiver.url)
    _emit(settings, "deletion.completed")
    (delivery,) = _settled(admin, webhook["id"], 1, "failed")
    assert delivery["attempt_count"] == settings.webhook_max_attempts
    assert delivery["next_attempt_at"] is None
    attempts = admin.ok(admin.get(f"/webhook-deliveries/{delivery['id']}"))["attempts"]
    assert len(attempts) == settings.webhook_max_attempts
    if answer in ("hang", "drip"):  # a drip never trips a read's timeout: the whole one's
        assert all(a["status_code"] is None and "timed out" in a["error"] for a in attempts)
        # bounded near the limit (a drip would otherwise run for an hour); slack for a busy CI
        assert all(a["duration_ms"] < 1000 * (settings.webhook_timeout_s + 2) for a in attempts)
    else:
        assert all(a["status_code"] == 500 for a in attempts)
    time.sleep(0.3)  # nothing more is tried
    assert len(receiver.requests()) == settings.webhook_max_attempts


def test_a_redirect_is_not_followed(
    admin: Api, settings: Settings, tmp_path: Path, receivers: list[Receiver]
) -> None:
    receiver = Receiver(tmp_path, then="302")
    receivers.append(receiver)
    webhook = _register(admin, receiver.url)
    _emit(settings, "deletion.completed")
    (delivery,) = _settled(admin, webhook["id"], 1, "failed")
    attempts = admin.ok(admin.get(f"/webhook-deliveries/{delivery['id']}"))["attempts"]
    assert all(a["status_code"] == 302 and "redirect" in a["error"] for a in attempts)


def test_redeliver_sends_it_again(
    admin: Api, settings: Settings, tmp_path: Path, receivers: list[Receiver]
) -> None:
    receiver = Receiver(tmp_path)
    receivers.append(receiver)
    webhook = _register(admin, receiver.url)
    (event_id,) = _emit(settings, "deletion.completed")
    (delivery,) = _settled(admin, webhook["id"], 1, "delivered")
    queued = admin.ok(admin.post(f"/webhook-deliveries/{delivery['id']}/redeliver"), 202)
    assert queued["id"] == delivery["id"]
    requests = receiver.wait_for(2)
    assert [r["headers"]["Unlearn-Event-Id"] for r in requests] == [event_id, event_id]
    assert requests[0]["body"] == requests[1]["body"]
    (again,) = _settled(admin, webhook["id"], 1, "delivered")
    detail = admin.ok(admin.get(f"/webhook-deliveries/{again['id']}"))
    assert [a["status_code"] for a in detail["attempts"]] == [200, 200]
    problem(admin.post(f"/webhook-deliveries/{uuid.uuid4()}/redeliver"), 404)
    other = issue_keys(settings, Role.admin)["b"]
    response = admin.client.post(
        f"/webhook-deliveries/{delivery['id']}/redeliver", headers=_auth(other)
    )
    problem(response, 404)


def test_rotation_signs_with_both_secrets_during_the_overlap(
    admin: Api, settings: Settings, tmp_path: Path, receivers: list[Receiver]
) -> None:
    receiver = Receiver(tmp_path)
    receivers.append(receiver)
    webhook = _register(admin, receiver.url)
    rotated = admin.ok(admin.post(f"/webhooks/{webhook['id']}/rotate"), 201)
    assert rotated["id"] == webhook["id"] and rotated["secret"] != webhook["secret"]
    assert rotated["secret_rotated_at"] is not None
    _emit(settings, "deletion.completed")
    (request,) = receiver.wait_for(1)
    assert request["headers"]["Unlearn-Signature"].count("v1=") == 2
    assert _verified(request, rotated["secret"], webhook["secret"]) == [
        rotated["secret"],
        webhook["secret"],
    ]


def test_rotation_without_overlap_signs_with_the_new_secret_only(
    fresh_db: FreshDatabase, tmp_path: Path, receivers: list[Receiver]
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url=fresh_db.url(),
        webhook_secret_overlap_s=0,
        **FAST,
    )
    receiver = Receiver(tmp_path)
    receivers.append(receiver)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        admin = Api(client, issue_keys(settings, Role.admin)["a"])
        webhook = _register(admin, receiver.url)
        rotated = admin.ok(admin.post(f"/webhooks/{webhook['id']}/rotate"), 201)
        _emit(settings, "deletion.completed")
        (request,) = receiver.wait_for(1)
        assert _verified(request, rotated["secret"], webhook["secret"]) == [rotated["secret"]]


def test_only_subscribed_endpoints_get_an_event_and_deleting_one_cancels_its_deliveries(
    fresh_db: FreshDatabase, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path, database_url=fresh_db.url(), webhook_delivery=False, **FAST
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        admin = Api(client, issue_keys(settings, Role.admin)["a"])
        wants = _register(admin, "http://127.0.0.1:9/a", ["deletion.completed"])
        other = _register(admin, "http://127.0.0.1:9/b", ["model.ready"])
        assert _emit(settings, "deletion.failed") == []  # nobody subscribed: nothing written
        _emit(settings, "deletion.completed", 2)
        pending = _deliveries(admin, wants["id"])
        assert [d["state"] for d in pending] == ["pending", "pending"]
        assert _deliveries(admin, other["id"]) == []
        assert client.delete(f"/webhooks/{wants['id']}", headers=admin.headers).status_code == 204
        for delivery in pending:
            detail = admin.ok(admin.get(f"/webhook-deliveries/{delivery['id']}"))
            assert detail["state"] == "failed" and detail["attempts"] == []
            problem(admin.post(f"/webhook-deliveries/{delivery['id']}/redeliver"), 409)


def test_the_dashboard_lists_webhooks_and_deliveries_and_redelivers(
    admin: Api, settings: Settings, tmp_path: Path, receivers: list[Receiver]
) -> None:
    receiver = Receiver(tmp_path, script=["500"])
    receivers.append(receiver)
    webhook = _register(admin, receiver.url)
    _emit(settings, "deletion.completed")
    (delivery,) = _settled(admin, webhook["id"], 1, "delivered")
    html = admin.get("/dashboard?part=webhooks").text
    assert receiver.url in html and webhook["secret"] not in html
    row = f'data-delivery-id="{delivery["id"]}" data-state="delivered" data-attempts="2"'
    assert row in html
    assert f'action="/dashboard/webhook-deliveries/{delivery["id"]}/redeliver"' in html
    assert "webhooks" in admin.get("/dashboard").text  # the overview includes the part

    pressed = admin.client.post(
        f"/dashboard/webhook-deliveries/{delivery['id']}/redeliver",
        headers=admin.headers,
        follow_redirects=False,
    )
    assert pressed.status_code == 303 and pressed.headers["location"] == "/dashboard"
    receiver.wait_for(3)
    anonymous = admin.client.post(
        f"/dashboard/webhook-deliveries/{delivery['id']}/redeliver", follow_redirects=False
    )
    assert anonymous.status_code == 303  # to the login form; nothing queued
    assert anonymous.headers["location"].startswith("/dashboard/login")

    assert f'action="/dashboard/webhooks/{webhook["id"]}/ping"' in html
    pinged = admin.client.post(
        f"/dashboard/webhooks/{webhook['id']}/ping", headers=admin.headers, follow_redirects=False
    )
    assert pinged.status_code == 303 and pinged.headers["location"] == "/dashboard"
    assert json.loads(receiver.wait_for(4)[3]["body"])["type"] == "webhook.ping"


def test_an_endpoint_gets_its_events_in_order_through_retries(
    admin: Api, settings: Settings, tmp_path: Path, receivers: list[Receiver]
) -> None:
    """Three events at once; the first is refused twice: the younger ones wait for it (a
    delivery goes only when the older ones of its endpoint are settled)."""
    receiver = Receiver(tmp_path, script=["500", "503"])
    receivers.append(receiver)
    webhook = _register(admin, receiver.url)
    emitted = _emit(settings, "deletion.completed", 3)
    _settled(admin, webhook["id"], 3, "delivered")
    arrived = [r["headers"]["Unlearn-Event-Id"] for r in receiver.wait_for(5)]
    assert arrived == [emitted[0]] * 3 + emitted[1:]


def test_a_rolled_back_request_writes_no_event(
    admin: Api,
    settings: Settings,
    tmp_path: Path,
    receivers: list[Receiver],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Events go in the transaction of the change they announce: a deletion that fails after
    it emitted `deletion.deactivated`, before its commit, leaves no event stored or sent."""
    receiver = Receiver(tmp_path)
    receivers.append(receiver)
    webhook = _register(admin, receiver.url, ["deletion.deactivated"])
    model_id = admin.ok(admin.post("/models", TINY_MODEL), 201)["id"]
    admin.ok(admin.post(f"/models/{model_id}/samples", {"samples": samples(3)}))
    emitted: list[str] = []
    real_emit = events.emit

    def counting_emit(*args: Any, **kwargs: Any) -> Any:
        emitted.append(args[2])
        return real_emit(*args, **kwargs)

    def crash(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("the process failed before the commit")

    with monkeypatch.context() as patch:
        patch.setattr(events, "emit", counting_emit)
        patch.setattr(deletion_views, "accepted_public", crash)
        assert admin.delete(model_id, sample_ids=["s001"]).status_code == 500
    assert "deletion.deactivated" in emitted  # the failed request did emit
    later = admin.ok(admin.delete(model_id, sample_ids=["s002"]), 202)
    _settled(admin, webhook["id"], 1, "delivered")
    time.sleep(0.3)  # the dispatcher polls every 0.05 s: a second event would have gone
    (request,) = receiver.requests()
    assert json.loads(request["body"])["data"]["deletion"]["id"] == later["id"]
    with unit_of_work(make_session_factory(make_engine(settings.database_url))) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(WebhookEvent)) == 1


def test_a_ping_goes_to_that_endpoint_alone_signed(
    admin: Api, settings: Settings, tmp_path: Path, receivers: list[Receiver]
) -> None:
    pinged, other = Receiver(tmp_path), Receiver(tmp_path)
    receivers += [pinged, other]
    webhook = _register(admin, pinged.url, ["model.ready"])
    _register(admin, other.url, ["model.ready"])
    response = admin.post(f"/webhooks/{webhook['id']}/ping", None)
    queued = admin.ok(response, 202)
    assert response.headers["Location"] == f"/webhook-deliveries/{queued['id']}"
    assert (queued["event_type"], queued["state"]) == ("webhook.ping", "pending")
    (delivery,) = _settled(admin, webhook["id"], 1, "delivered")
    assert delivery["id"] == queued["id"]
    (request,) = pinged.wait_for(1)
    assert _verified(request, webhook["secret"]) == [webhook["secret"]]
    body = json.loads(request["body"])
    assert body["type"] == "webhook.ping" and body["id"] == queued["event_id"]
    assert body["data"] == {"webhook": {"id": webhook["id"], "url": pinged.url}}
    time.sleep(0.3)
    assert other.requests() == []


def test_a_ping_needs_an_admin_key_and_a_live_endpoint(
    admin: Api, client: TestClient, settings: Settings
) -> None:
    webhook = _register(admin, "http://127.0.0.1:9/hook")
    app = Api(client, issue_keys(settings)["a"])
    problem(app.post(f"/webhooks/{webhook['id']}/ping", None), 403)
    assert client.delete(f"/webhooks/{webhook['id']}", headers=admin.headers).status_code == 204
    problem(admin.post(f"/webhooks/{webhook['id']}/ping", None), 404)
    problem(admin.post(f"/webhooks/{uuid.uuid4()}/ping", None), 404)


def test_deliveries_verify_with_the_standardwebhooks_package(
    admin: Api, settings: Settings, tmp_path: Path, receivers: list[Receiver]
) -> None:
    """What a receiver gets verifies with the spec's maintained library (not our code), and
    the event id it deduplicates on (`webhook-id`, = `Unlearn-Event-Id`) is what is signed."""
    import standardwebhooks
    from standardwebhooks.webhooks import WebhookVerificationError

    receiver = Receiver(tmp_path, script=["500"])
    receivers.append(receiver)
    webhook = _register(admin, receiver.url)
    (event_id,) = _emit(settings, "deletion.completed")
    requests = receiver.wait_for(2)  # a retry signs again, with the same id
    verifier = standardwebhooks.Webhook(webhook["secret"])
    for request in requests:
        headers = request["headers"]
        assert verifier.verify(request["body"].encode(), headers)["id"] == event_id
        assert headers["webhook-id"] == headers["Unlearn-Event-Id"] == event_id
        assert _verified(request, webhook["secret"]) == [webhook["secret"]]  # the old one too
        with pytest.raises(WebhookVerificationError):  # another id under the same signature
            verifier.verify(request["body"].encode(), {**headers, "webhook-id": "evt_forged"})
    rotated = admin.ok(admin.post(f"/webhooks/{webhook['id']}/rotate"), 201)
    _emit(settings, "deletion.completed")
    (after,) = receiver.wait_for(3)[2:]
    for secret in (rotated["secret"], webhook["secret"]):  # both sign during the overlap
        standardwebhooks.Webhook(secret).verify(after["body"].encode(), after["headers"])


def test_the_dashboards_ping_and_redeliver_spend_the_write_rate_limit(
    fresh_db: FreshDatabase, tmp_path: Path
) -> None:
    """The dashboard's buttons (by login cookie or Bearer key) spend the key's write budget like
    the API's routes: beyond it a 429 and nothing queued."""
    settings = Settings(
        data_dir=tmp_path,
        database_url=fresh_db.url(),
        write_rate_per_minute=3,
        webhook_delivery=False,
        **FAST,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        token = issue_keys(settings, Role.admin)["a"]
        admin = Api(client, token)
        webhook = _register(admin, "http://127.0.0.1:9/hook")  # 1 of 3
        _emit(settings, "deletion.completed")
        (delivery,) = _deliveries(admin, webhook["id"])
        login = client.post("/dashboard/login", data={"key": token}, follow_redirects=False)
        assert login.status_code == 303  # the cookie now names the key
        ping = f"/dashboard/webhooks/{webhook['id']}/ping"
        redeliver = f"/dashboard/webhook-deliveries/{delivery['id']}/redeliver"
        pressed = [
            client.post(ping, follow_redirects=False).status_code,  # cookie: 2 of 3
            client.post(redeliver, follow_redirects=False).status_code,  # cookie: 3 of 3
            client.post(ping, follow_redirects=False).status_code,
            client.post(redeliver, follow_redirects=False).status_code,
        ]
        assert pressed == [303, 303, 429, 429]
        client.cookies.clear()
        by_key = client.post(ping, headers=admin.headers, follow_redirects=False)
        assert by_key.status_code == 429 and int(by_key.headers["retry-after"]) >= 1
        problem(admin.post(f"/webhooks/{webhook['id']}/ping", None), 429)
        assert len(_deliveries(admin, webhook["id"])) == 2  # the event's and one ping


def test_endpoints_per_tenant_are_capped(fresh_db: FreshDatabase, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url=fresh_db.url(),
        webhook_max_endpoints=2,
        webhook_delivery=False,
        **FAST,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        admin = Api(client, issue_keys(settings, Role.admin)["a"])
        first = _register(admin, "http://127.0.0.1:9/1")
        _register(admin, "http://127.0.0.1:9/2")
        body = {"url": "http://127.0.0.1:9/3", "events": ["model.ready"]}
        refused = problem(admin.post("/webhooks", body), 409)
        assert "2" in refused["detail"] and "UNLEARN_WEBHOOK_MAX_ENDPOINTS" in refused["detail"]
        assert len(admin.ok(admin.get("/webhooks"))) == 2
        other = Api(client, issue_keys(settings, Role.admin)["b"])
        _register(other, "http://127.0.0.1:9/b")  # another tenant has its own count
        assert client.delete(f"/webhooks/{first['id']}", headers=admin.headers).status_code == 204
        _register(admin, "http://127.0.0.1:9/3")  # a deleted endpoint no longer counts
