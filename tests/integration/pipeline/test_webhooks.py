"""A deletion's whole life as webhooks, on SQLite and PostgreSQL: two endpoints (real receiver
processes on loopback) subscribed to every event get, each once and in the order they occurred,
`model.ready`, `deletion.deactivated`, `deletion.approximated`, `deletion.completed` and
`exactness_audit.finished`, each signed; no body holds the deleted samples' text, the subject's
identifier, the sample ids or any hash the certificate lists."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.db.models import Role
from service.settings import Settings
from service.webhooks import signing
from service.webhooks.events import EVENT_TYPES
from tests.conftest import FreshDatabase
from tests.integration.api import (
    TINY_BASE,
    Api,
    InProcessWorker,
    issue_keys,
    samples,
    trained_model,
)
from tests.integration.receiver import Receiver
from tests.integration.services import wait_for

pytestmark = pytest.mark.integration
EVENTS = list(EVENT_TYPES)
SUBJECT = "subject-alice-7f3a@example.com"
SECRET_TEXTS = ["alice's diary entry 4242 good", "alice's bank statement 9191 bad"]
LIFE = [
    "model.ready",
    "deletion.deactivated",
    "deletion.approximated",
    "deletion.completed",
    "exactness_audit.finished",
]


@pytest.fixture
def settings(fresh_db: FreshDatabase, tmp_path: Path, tiny_dir: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=fresh_db.url(),
        backbone_path=tiny_dir,
        default_base_model=TINY_BASE,
        webhook_backoff_s=0.05,
        webhook_backoff_max_s=0.2,
        webhook_poll_s=0.05,
        webhook_timeout_s=2,
        webhook_lease_s=3,
    )


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[list[Receiver]]:
    # The second one fails its first attempt of each of two events: order holds through retries.
    started = [Receiver(tmp_path), Receiver(tmp_path, script=["200", "500", "200", "503"])]
    yield started
    for receiver in started:
        receiver.stop()


def _verified(request: dict[str, Any], secret: str) -> bool:
    pairs = [p.split("=", 1) for p in request["headers"]["Unlearn-Signature"].split(",")]
    (t,) = [v for k, v in pairs if k == "t"]
    expected = signing.signature(secret, int(t), request["body"].encode())
    return expected in [v for k, v in pairs if k == "v1"]


def test_every_event_of_a_deletion_arrives_once_per_endpoint_in_order_signed_and_clean(
    client: TestClient,
    settings: Settings,
    worker: InProcessWorker,
    receivers: list[Receiver],
) -> None:
    admin = Api(client, issue_keys(settings, Role.admin)["a"])
    hooks = [
        admin.ok(admin.post("/webhooks", {"url": r.url, "events": EVENTS}), 201) for r in receivers
    ]

    rows = samples(24, subjects={3: SUBJECT, 10: SUBJECT})
    rows[3]["text"], rows[10]["text"] = SECRET_TEXTS
    model_id = trained_model(admin, worker, rows, {"unlearning_policy": "approximate_then_exact"})
    deletion = admin.ok(admin.delete(model_id, subject_id=SUBJECT), 202)
    assert deletion["status"] == "deactivated" and deletion["counts"]["deleted"] == 2
    assert worker.approximate() == 1
    worker.drain()
    assert admin.ok(admin.get(f"/deletions/{deletion['id']}"))["status"] == "completed"
    audit = admin.ok(admin.post(f"/models/{model_id}/exactness-audits"), 202)
    assert worker.audit() == 1

    retried = 2  # the second receiver's two failed first attempts
    for receiver, n in zip(receivers, (len(LIFE), len(LIFE) + retried), strict=True):
        receiver.wait_for(n)
    for receiver, hook in zip(receivers, hooks, strict=True):
        # Each event once (a retry repeats its id, never out of turn), in order, signed.
        delivered = [r for r in receiver.requests() if r["step"] == "200"]
        bodies = [json.loads(r["body"]) for r in delivered]
        assert [b["type"] for b in bodies] == LIFE
        assert len({b["id"] for b in bodies}) == len(LIFE)
        arrived = [r["headers"]["Unlearn-Event-Id"] for r in receiver.requests()]
        runs = [e for i, e in enumerate(arrived) if i == 0 or arrived[i - 1] != e]
        assert runs == [b["id"] for b in bodies]  # a retry comes before anything younger
        for request, body in zip(delivered, bodies, strict=True):
            assert _verified(request, hook["secret"])
            assert request["headers"]["Unlearn-Event-Type"] == body["type"]
            assert request["headers"]["Unlearn-Event-Id"] == body["id"]
            assert set(body) == {"id", "type", "created_at", "tenant_id", "data"}
        by_type = {b["type"]: b["data"] for b in bodies}
        assert by_type["model.ready"]["model"]["id"] == model_id
        assert by_type["model.ready"]["model"]["status"] == "ready"
        for kind, status in [
            ("deletion.deactivated", "deactivated"),
            ("deletion.approximated", "approximated"),
            ("deletion.completed", "completed"),
        ]:
            assert by_type[kind]["deletion"]["id"] == deletion["id"]
            assert by_type[kind]["deletion"]["status"] == status
            assert by_type[kind]["deletion"]["counts"]["deleted"] == 2
        finished = by_type["exactness_audit.finished"]["exactness_audit"]
        assert (finished["id"], finished["status"], finished["result"]) == (
            audit["id"],
            "succeeded",
            "passed",
        )

    # The same events reached both endpoints; the API shows them delivered.
    ids = [
        [json.loads(r["body"])["id"] for r in x.requests() if r["step"] == "200"] for x in receivers
    ]
    assert ids[0] == ids[1]
    for hook in hooks:

        def settled(hook_id: str = hook["id"]) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = admin.ok(admin.get(f"/webhooks/{hook_id}/deliveries"))
            return found if all(d["state"] == "delivered" for d in found) else []

        deliveries = wait_for(settled, 10, "the last delivery's record")
        assert [d["event_type"] for d in deliveries] == LIFE[::-1]  # newest first

    # No personal data in any body: texts, the subject, the sample ids, the certificate's hashes.
    certificate = admin.ok(admin.get(f"/deletions/{deletion['id']}/certificate"))
    forbidden = [
        *SECRET_TEXTS,
        SUBJECT,
        "alice",
        rows[3]["external_id"],
        rows[10]["external_id"],
        certificate["subject_hash"],
        *certificate["sample_id_hashes"],
    ]
    assert certificate["subject_hash"] and len(certificate["sample_id_hashes"]) == 2
    raw = "\n".join(r["body"] for x in receivers for r in x.requests())
    assert raw.count('"type":"deletion.completed"') == 2
    for value in forbidden:
        assert value not in raw, value
