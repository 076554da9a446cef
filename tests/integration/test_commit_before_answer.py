"""An answer means committed: every write route of the API and the dashboard has committed its
transaction when its response starts (SQLite and PostgreSQL).

A client that is told 201 may act on it at once (add samples, then train) and must find what it
was told is stored; and a commit that fails after the answer would lose data the client was
told is kept. Starlette's TestClient returns only once the whole ASGI call is over (after any
dependency teardown), so the check cannot wait for the client: an ASGI wrapper around the app
reads the database from another connection at the moment the app sends
``http.response.start``, and records what it saw.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from service.app import create_app
from service.db.models import (
    ApiKey,
    AuditCheckpoint,
    DashboardSession,
    DeletionRequest,
    DeletionStatus,
    Job,
    JobKind,
    Model,
    ModelStatus,
    Role,
    Sample,
    TenantOldSecret,
    Webhook,
    WebhookDelivery,
)
from service.db.models import DeliveryState as Delivery
from service.settings import Settings
from tests.conftest import FreshDatabase
from tests.integration.api import Api, issue_keys, samples

pytestmark = pytest.mark.integration

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Check = Callable[[sa.Connection], bool]

MODEL = {"name": "m", "labels": ["neg", "pos"], "n_shards": 2, "n_slices": 2, "budget": 2}
HOOK = {"url": "http://127.0.0.1:9/hook", "events": ["deletion.completed"]}

#: POST routes that write nothing a client is told about (a prediction, a membership check,
#: dropping the login cookie): nothing to find committed.
READS = {
    "POST /models/{model_id}/predict",
    "POST /models/{model_id}/generate",
    "POST /models/{model_id}/score",
    "POST /deletions/{deletion_id}/verify",
}


class AtResponseStart:
    """The app, with ``check`` run on another connection when a response starts; what it
    returned is in ``seen`` (one entry per response)."""

    def __init__(self, app: Any, db: sa.Engine) -> None:
        self.app = app
        self.db = db
        self.check: Check | None = None
        self.seen: list[bool] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        check = self.check
        if scope["type"] != "http" or check is None:
            await self.app(scope, receive, send)
            return

        async def probing(message: Message) -> None:
            if message["type"] == "http.response.start":
                with self.db.connect() as conn:  # blocks the loop: the app cannot go on
                    self.seen.append(check(conn))
            await send(message)

        await self.app(scope, receive, probing)


@dataclass
class World:
    """A client on the wrapped app, an app key and an admin key of tenant a, the database."""

    client: TestClient
    probe: AtResponseStart
    app: Api
    admin: Api
    db: sa.Engine
    ids: dict[str, str] = field(default_factory=dict)

    def model(self, rows: int = 0) -> str:
        model_id: str = self.app.ok(self.app.post("/models", MODEL), 201)["id"]
        if rows:
            stored = self.app.ok(
                self.app.post(f"/models/{model_id}/samples", {"samples": samples(rows)})
            )
            assert stored["stored"] == rows
        self.ids["model"] = model_id
        return model_id

    def deletion(self) -> str:
        model_id = self.model(4)
        accepted = self.app.ok(self.app.delete(model_id, sample_ids=["s001"]), 202)
        self.ids["deletion"] = accepted["id"]
        return str(accepted["id"])

    def webhook(self) -> str:
        self.ids["webhook"] = self.admin.ok(self.admin.post("/webhooks", HOOK), 201)["id"]
        return self.ids["webhook"]

    def delivery(self) -> str:
        """A ping's delivery, marked delivered (so that a redelivery visibly queues it)."""
        delivered = self.admin.ok(self.admin.post(f"/webhooks/{self.webhook()}/ping"), 202)
        with self.db.begin() as conn:
            conn.execute(
                sa.update(WebhookDelivery)
                .where(WebhookDelivery.id == uuid.UUID(delivered["id"]))
                .values(state=Delivery.delivered, attempt_count=1)
            )
        self.ids["delivery"] = delivered["id"]
        return str(delivered["id"])

    def key(self) -> str:
        issued = self.admin.ok(self.admin.post("/keys", {"name": "other", "role": "app"}), 201)
        self.ids["key"] = issued["key"]["id"]
        return self.ids["key"]

    def count(self, conn: sa.Connection, table: Any, *where: Any) -> int:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(table).where(*where)) or 0)

    def uid(self, name: str) -> uuid.UUID:
        return uuid.UUID(self.ids[name])


@pytest.fixture
def settings(fresh_db: FreshDatabase, tmp_path: Path) -> Settings:
    """Nothing delivers webhooks here: a delivery's state is what the route left."""
    return Settings(data_dir=tmp_path, database_url=fresh_db.url(), webhook_delivery=False)


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    # A plain engine: the app's SQLite engine begins every transaction IMMEDIATE (the write
    # lock), which would wait for the request's own open transaction.
    db = sa.create_engine(settings.database_url)
    probe = AtResponseStart(create_app(settings), db)
    app_key = issue_keys(settings)["a"]
    admin_key = issue_keys(settings, Role.admin)["a"]
    with TestClient(probe, raise_server_exceptions=False) as client:
        yield World(client, probe, Api(client, app_key), Api(client, admin_key), db)
    db.dispose()


@dataclass(frozen=True)
class Case:
    """A write route: what it needs first, its call, its status and what must be committed."""

    route: str
    setup: Callable[[World], object]
    call: Callable[[World], Any]
    status: int
    committed: Callable[[World, sa.Connection], bool]


def _nothing(_: World) -> None:
    return None


def _ready(w: World) -> None:
    """A model marked trained (an exactness audit needs one; nothing is retrained here)."""
    w.model(4)
    with w.db.begin() as conn:
        conn.execute(
            sa.update(Model).where(Model.id == w.uid("model")).values(status=ModelStatus.ready)
        )


def _failed(w: World) -> None:
    w.deletion()
    with w.db.begin() as conn:
        conn.execute(
            sa.update(DeletionRequest)
            .where(DeletionRequest.id == w.uid("deletion"))
            .values(status=DeletionStatus.failed, failure_reason="test")
        )


def _dashboard_post(w: World, url: str) -> Any:
    return w.client.post(url, headers=w.admin.headers, follow_redirects=False)


def _queued(w: World, conn: sa.Connection) -> bool:
    return (
        w.count(
            conn,
            WebhookDelivery,
            WebhookDelivery.id == w.uid("delivery"),
            WebhookDelivery.state == Delivery.pending,
        )
        == 1
    )


def _pinged(w: World, conn: sa.Connection) -> bool:
    return w.count(conn, WebhookDelivery, WebhookDelivery.webhook_id == w.uid("webhook")) == 1


def _revoked(w: World, conn: sa.Connection) -> bool:
    revoked = ApiKey.id == w.uid("key"), ApiKey.revoked_at.is_not(None)
    return w.count(conn, ApiKey, *revoked) == 1


def _logged_in(w: World) -> None:
    token = w.admin.headers["Authorization"].removeprefix("Bearer ")
    login = w.client.post("/dashboard/login", data={"key": token}, follow_redirects=False)
    assert login.status_code == 303, login.text


def _admin_used(w: World, conn: sa.Connection) -> bool:
    return w.count(conn, ApiKey, ApiKey.role == Role.admin, ApiKey.last_used_at.is_not(None)) == 1


CASES = [
    Case(
        "POST /models",
        _nothing,
        lambda w: w.app.post("/models", MODEL),
        201,
        lambda w, conn: w.count(conn, Model) == 1,
    ),
    Case(
        "POST /models/{model_id}/samples",
        lambda w: w.model(),
        lambda w: w.app.post(f"/models/{w.ids['model']}/samples", {"samples": samples(5)}),
        200,
        lambda w, conn: w.count(conn, Sample, Sample.model_id == w.uid("model")) == 5,
    ),
    Case(
        "POST /models/{model_id}/train",
        lambda w: w.model(4),
        lambda w: w.app.post(f"/models/{w.ids['model']}/train"),
        202,
        lambda w, conn: w.count(conn, Job, Job.model_id == w.uid("model")) > 0,
    ),
    Case(
        "POST /deletions",
        lambda w: w.model(4),
        lambda w: w.app.delete(w.ids["model"], sample_ids=["s001"]),
        202,
        lambda w, conn: w.count(conn, DeletionRequest) == 1,
    ),
    Case(
        "POST /models/{model_id}/class-deletions",
        lambda w: w.model(4),
        lambda w: w.app.post(f"/models/{w.ids['model']}/class-deletions", {"label": "pos"}),
        202,
        lambda w, conn: w.count(conn, DeletionRequest) == 1,
    ),
    Case(
        "POST /deletions/{deletion_id}/retry",
        _failed,
        lambda w: w.app.post(f"/deletions/{w.ids['deletion']}/retry"),
        202,
        lambda w, conn: (
            w.count(
                conn,
                DeletionRequest,
                DeletionRequest.id == w.uid("deletion"),
                DeletionRequest.status != DeletionStatus.failed,
            )
            == 1
        ),
    ),
    Case(
        "POST /models/{model_id}/exactness-audits",
        _ready,
        lambda w: w.admin.post(f"/models/{w.ids['model']}/exactness-audits"),
        202,
        lambda w, conn: w.count(conn, Job, Job.kind == JobKind.exactness_audit) == 1,
    ),
    Case(
        "POST /models/{model_id}/audit/verify",
        lambda w: w.model(),
        lambda w: w.admin.post(f"/models/{w.ids['model']}/audit/verify"),
        200,
        lambda w, conn: w.count(conn, AuditCheckpoint, AuditCheckpoint.full_at.is_not(None)) == 1,
    ),
    Case(
        "POST /keys",
        _nothing,
        lambda w: w.admin.post("/keys", {"name": "new", "role": "app"}),
        201,
        lambda w, conn: w.count(conn, ApiKey, ApiKey.name == "new") == 1,
    ),
    Case(
        "POST /keys/{key_id}/rotate",
        lambda w: w.key(),
        lambda w: w.admin.post(f"/keys/{w.ids['key']}/rotate"),
        201,
        _revoked,
    ),
    Case(
        "DELETE /keys/{key_id}",
        lambda w: w.key(),
        lambda w: w.client.delete(f"/keys/{w.ids['key']}", headers=w.admin.headers),
        204,
        _revoked,
    ),
    Case(
        "POST /tenant/hash-secret/rotate",
        _nothing,
        lambda w: w.admin.post("/tenant/hash-secret/rotate"),
        200,
        lambda w, conn: w.count(conn, TenantOldSecret) == 1,
    ),
    Case(
        "POST /webhooks",
        _nothing,
        lambda w: w.admin.post("/webhooks", HOOK),
        201,
        lambda w, conn: w.count(conn, Webhook) == 1,
    ),
    Case(
        "DELETE /webhooks/{webhook_id}",
        lambda w: w.webhook(),
        lambda w: w.client.delete(f"/webhooks/{w.ids['webhook']}", headers=w.admin.headers),
        204,
        lambda w, conn: w.count(conn, Webhook, Webhook.deleted_at.is_not(None)) == 1,
    ),
    Case(
        "POST /webhooks/{webhook_id}/rotate",
        lambda w: w.webhook(),
        lambda w: w.admin.post(f"/webhooks/{w.ids['webhook']}/rotate"),
        201,
        lambda w, conn: w.count(conn, Webhook, Webhook.previous_secret.is_not(None)) == 1,
    ),
    Case(
        "POST /webhooks/{webhook_id}/ping",
        lambda w: w.webhook(),
        lambda w: w.admin.post(f"/webhooks/{w.ids['webhook']}/ping"),
        202,
        _pinged,
    ),
    Case(
        "POST /webhook-deliveries/{delivery_id}/redeliver",
        lambda w: w.delivery(),
        lambda w: w.admin.post(f"/webhook-deliveries/{w.ids['delivery']}/redeliver"),
        202,
        _queued,
    ),
    Case(
        "POST /dashboard/webhooks/{webhook_id}/ping",
        lambda w: w.webhook(),
        lambda w: _dashboard_post(w, f"/dashboard/webhooks/{w.ids['webhook']}/ping"),
        303,
        _pinged,
    ),
    Case(
        "POST /dashboard/webhook-deliveries/{delivery_id}/redeliver",
        lambda w: w.delivery(),
        lambda w: _dashboard_post(
            w, f"/dashboard/webhook-deliveries/{w.ids['delivery']}/redeliver"
        ),
        303,
        _queued,
    ),
    Case(
        "POST /dashboard/login",
        _nothing,
        lambda w: w.client.post(
            "/dashboard/login",
            data={"key": w.admin.headers["Authorization"].removeprefix("Bearer ")},
            follow_redirects=False,
        ),
        303,
        lambda w, conn: _admin_used(w, conn) and w.count(conn, DashboardSession) == 1,
    ),
    Case(
        "POST /dashboard/logout",
        _logged_in,
        lambda w: w.client.post("/dashboard/logout", follow_redirects=False),
        303,
        lambda w, conn: (
            w.count(conn, DashboardSession, DashboardSession.ended_at.is_not(None)) == 1
        ),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.route)
def test_the_answer_comes_after_the_commit(world: World, case: Case) -> None:
    case.setup(world)
    world.probe.check = lambda conn: case.committed(world, conn)
    response = case.call(world)
    world.probe.check = None
    assert response.status_code == case.status, response.text
    assert world.probe.seen == [True], f"{case.route} answered before its commit"
    with world.db.connect() as conn:  # and the check can see it: it is no vacuous probe
        assert case.committed(world, conn)


def test_every_write_route_is_checked(settings: Settings) -> None:
    """A new POST, PUT, PATCH or DELETE route gets a case above (or is listed as a read)."""
    writes = {
        f"{method} {route.path}"
        for route in iter_route_contexts(create_app(settings).routes)
        for method in route.methods or ()
        if method in {"POST", "PUT", "PATCH", "DELETE"}
    }
    assert "POST /models" in writes  # the walk finds the included routers' routes
    assert writes == {case.route for case in CASES} | READS


@pytest.mark.parametrize(
    ("route", "housekeep"), [("train", False), ("deletions", True)], ids=["jobs", "completed"]
)
def test_the_commit_wakes_the_relay_before_the_answer(
    world: World, monkeypatch: pytest.MonkeyPatch, route: str, housekeep: bool
) -> None:
    """The route wakes nobody: its commit does (jobs queued: relay now; a deletion completed in
    its request, as one on an untrained model does: housekeep in that round too)."""
    model_id = world.model(4)
    wakes: list[bool] = []
    relay = world.probe.app.state.relay
    monkeypatch.setattr(relay, "wake", lambda housekeep=False: wakes.append(housekeep))
    world.probe.check = lambda _conn: housekeep in wakes
    if route == "train":
        response = world.app.post(f"/models/{model_id}/train")
    else:
        response = world.app.delete(model_id, sample_ids=["s001"])
    world.probe.check = None
    assert response.status_code == 202, response.text
    assert world.probe.seen == [True]
