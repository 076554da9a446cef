"""The Python client (client/unlearn_client) against a real `unlearn serve` and `unlearn worker`
on the embedded defaults (SQLite, the SQLAlchemy broker) and the tiny backbone: the README's
flow through the client, its typed errors with their problem documents, and a deletion whose
answer is lost on the way back, retried with the same Idempotency-Key: one deletion, not two.
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.api import TINY_MODEL, samples, save_tiny_backbone
from tests.integration.services import answers, free_port, run_cli, stop, unlearn, wait_for
from unlearn_client import (
    AuthenticationError,
    ConflictError,
    Delivery,
    NotFoundError,
    PermissionDeniedError,
    UnlearnClient,
    ValidationError,
    WebhookSignatureError,
    verify_webhook,
)

# They start `unlearn` processes: one at a time beside the in-process tests (`make test`).
pytestmark = pytest.mark.xdist_group("processes")
TIMEOUT_S = 240.0
#: TINY_MODEL's S3T settings, as keyword arguments of create_model.
SETTINGS: dict[str, Any] = {k: v for k, v in TINY_MODEL.items() if k not in ("name", "labels")}


class Stack:
    def __init__(self, base_url: str, admin_key: str) -> None:
        self.base_url = base_url
        self.admin_key = admin_key

    def client(self, key: str | None = None, **options: Any) -> UnlearnClient:
        return UnlearnClient(self.base_url, key or self.admin_key, timeout=60, **options)

    def trained_model(self, api: UnlearnClient, rows: list[dict[str, Any]]) -> str:
        [base] = api.base_models()  # `db upgrade` registered the default from the folder
        model = api.create_model("tiny", labels=["neg", "pos"], base_model=base["name"], **SETTINGS)
        assert model["base_model"]["sha256"] == base["sha256"]
        assert api.register_samples(model["id"], rows)["stored"] == len(rows)
        api.train(model["id"])
        api.wait_until_ready(model["id"], timeout=TIMEOUT_S)
        return model["id"]


def _cli(args: list[str], env: dict[str, str]) -> str:
    done = run_cli(args, env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Migrate, create a tenant and an admin key with the CLI, then an API process and a worker
    (both queues) on the embedded database and broker."""
    data = tmp_path_factory.mktemp("client")
    env = {
        "UNLEARN_DATA_DIR": str(data),
        "UNLEARN_BACKBONE_PATH": str(save_tiny_backbone(data / "tiny")),
        "UNLEARN_RELAY_INTERVAL_S": "0.2",
        "UNLEARN_RETRAIN_WINDOW_S": "0",
        "UNLEARN_RETRAIN_RESTORE_AFTER_S": "0",
    }
    _cli(["db", "upgrade"], env)
    _cli(["tenants", "create", "acme"], env)
    admin_key = _cli(["keys", "create", "--tenant", "acme", "--role", "admin"], env)
    port = free_port()
    processes = [unlearn(["serve", "--port", str(port)], env), unlearn(["worker"], env)]
    base_url = f"http://127.0.0.1:{port}"

    try:
        wait_for(
            functools.partial(answers, f"{base_url}/healthz"), 90, "the API to answer /healthz"
        )
        yield Stack(base_url, admin_key)
    finally:
        output = "".join(stop(p) for p in processes)
    assert "Traceback" not in output, output[-3000:]


def test_the_readme_flow_through_the_client(stack: Stack) -> None:
    """Create, register (a bad row and a duplicate reported at their index in the caller's
    list, across batches), train and wait, predict, delete a subject, wait for the exact
    retrain, the certificate and verification of that deletion, and an exactness audit that
    passes and joins the certificate."""
    rows = samples(24, subjects={1: "user-07", 4: "user-07"})
    rows.insert(13, {"external_id": "bad", "label": "no-such-label", "text": "a text"})
    rows.insert(21, {**rows[0]})  # s000 again: a duplicate
    with stack.client() as api:
        model = api.create_model("tiny", labels=["neg", "pos"], **SETTINGS)
        assert model["status"] == "created"
        registered = api.register_samples(model["id"], rows, batch_size=10)
        assert registered["stored"] == 24
        assert [(e["row"], e["external_id"]) for e in registered["errors"]] == [
            (13, "bad"),
            (21, "s000"),
        ], registered["errors"]
        assert all(e["type"].startswith("https://") and e["detail"] for e in registered["errors"])
        assert sum(map(sum, registered["balance"]["sizes"])) == 24

        accepted = api.train(model["id"])
        assert api.get_job(accepted["job_id"])["kind"] == "train"
        assert api.wait_until_ready(model["id"], timeout=TIMEOUT_S)["status"] == "ready"
        assert api.model_status(model["id"])["estimated_quality"]["answering"]

        predicted = api.predict(model["id"], ["good item", "bad item"])
        assert [p["label"] in ("neg", "pos") for p in predicted["predictions"]] == [True, True]

        deletion = api.delete_subject(model["id"], "user-07")
        assert deletion["status"] == "deactivated" and deletion["counts"]["deleted"] == 2
        done = api.wait_for_deletion(deletion["id"], until="completed", timeout=TIMEOUT_S)
        assert done["status"] == "completed" and done["completed_at"]

        certificate = api.get_certificate(deletion["id"])
        assert certificate["deletion_id"] == deletion["id"] and certificate["unlearning"] == "exact"
        assert certificate["counts"]["deleted"] == 2 and certificate["audit_chain_verified"]
        assert api.verify_deletion(deletion["id"], subject_id="user-07")["included"]
        assert not api.verify_deletion(deletion["id"], sample_id="s002")["included"]
        listed = api.list_deletions(model_id=model["id"])
        assert [d["id"] for d in listed["items"]] == [deletion["id"]]

        audit = api.request_exactness_audit(model["id"])
        finished = api.wait_for_exactness_audit(model["id"], audit["id"], timeout=TIMEOUT_S)
        assert finished["result"] == "passed" and finished["layers_checked"]
        assert [a["id"] for a in api.list_exactness_audits(model["id"])] == [audit["id"]]
        (certified,) = api.get_certificate(deletion["id"])["exactness_audits"]
        assert certified["job_id"] == audit["id"] and certified["result"] == "passed"


class LosesTheFirstDeletionAnswer(httpx.BaseTransport):
    """A network that delivers the first ``POST /deletions`` to the service and loses its
    answer: the client sees a timeout after the service accepted the request."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.keys: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path == "/deletions":
            self.keys.append(request.headers["Idempotency-Key"])
            if len(self.keys) == 1:
                response.read()
                response.close()
                raise httpx.ReadTimeout("the answer was lost", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def test_a_deletion_whose_answer_is_lost_is_retried_once_not_twice(stack: Stack) -> None:
    transport = LosesTheFirstDeletionAnswer()
    with stack.client(transport=transport) as api:
        model_id = stack.trained_model(api, samples(12))
        deletion = api.request_deletion(model_id, sample_ids=["s003", "s004"])
        assert len(transport.keys) == 2 and transport.keys[0] == transport.keys[1]
        assert deletion["counts"]["deleted"] == 2  # the first request's answer, read back
        assert [d["id"] for d in api.iter_deletions(model_id=model_id)] == [deletion["id"]]
        # The service binds the key to its body: the same key with another body is refused.
        with pytest.raises(ConflictError) as caught:
            api.request_deletion(model_id, sample_ids=["s005"], idempotency_key=transport.keys[0])
        assert caught.value.problem["type"].endswith("/idempotency-conflict")
        api.wait_for_deletion(deletion["id"], timeout=TIMEOUT_S)


def test_errors_are_typed_and_carry_the_problem_document(stack: Stack) -> None:
    with stack.client("ul_not_a_key") as stranger, pytest.raises(AuthenticationError) as caught:
        stranger.list_deletions()
    assert caught.value.status == 401 and caught.value.problem["title"] == "Unauthenticated"
    assert caught.value.problem["type"] == "https://unlearn.dev/problems/unauthenticated"

    with stack.client() as api:
        missing = uuid.uuid4()
        with pytest.raises(NotFoundError) as not_found:
            api.get_deletion(missing)
        assert not_found.value.problem["status"] == 404
        assert not_found.value.type.endswith("/deletion-not-found")
        with pytest.raises(NotFoundError):
            api.get_model(missing)

        with pytest.raises(ValidationError) as invalid:
            api.create_model("x", labels=["a", "b"], n_shards=0)
        assert any(e["loc"][-1] == "n_shards" for e in invalid.value.errors)

        issued = api.create_key("an app", "app")
        assert issued["key"]["role"] == "app"
        with stack.client(issued["token"]) as app, pytest.raises(PermissionDeniedError) as denied:
            app.list_keys()
        assert denied.value.status == 403 and isinstance(denied.value, AuthenticationError)
        with stack.client(issued["token"]) as app, pytest.raises(PermissionDeniedError):
            app.rotate_hash_secret()  # an admin's action
        assert api.rotate_hash_secret() == {"version": 2}  # the version, never the secret
        api.revoke_key(issued["key"]["id"])
        with stack.client(issued["token"]) as app, pytest.raises(AuthenticationError):
            app.list_deletions()


class Receiver(http.server.BaseHTTPRequestHandler):
    deliveries: list[tuple[bytes, dict[str, str]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Receiver.deliveries.append((body, dict(self.headers.items())))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


def test_webhooks_signed_by_the_service_verify(stack: Stack) -> None:
    """Once the service has the webhook routes (issue 22's server side): register a loopback
    receiver, delete, and check the delivered events with verify_webhook."""
    paths = httpx.get(f"{stack.base_url}/openapi.json").json()["paths"]
    if "/webhooks" not in paths:
        pytest.skip("this service has no webhook routes yet")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Receiver.deliveries = []
    try:
        with stack.client() as api:
            url = f"http://127.0.0.1:{server.server_address[1]}/hook"
            hook = api.create_webhook(url, ["deletion.deactivated", "deletion.completed"])
            assert hook["secret"].startswith("whsec_")
            assert [h["id"] for h in api.list_webhooks()] == [hook["id"]]
            assert "secret" not in api.get_webhook(hook["id"])
            model_id = stack.trained_model(api, samples(12))
            deletion = api.request_deletion(model_id, sample_ids=["s001"])
            api.wait_for_deletion(deletion["id"], timeout=TIMEOUT_S)
            wait_for(lambda: len(Receiver.deliveries) >= 2, 60, "two deliveries")
            events = [
                verify_webhook(body, headers["Unlearn-Signature"], hook["secret"])
                for body, headers in Receiver.deliveries
            ]
            assert [e.type for e in events] == ["deletion.deactivated", "deletion.completed"]
            assert events[1].data["deletion"]["id"] == deletion["id"]
            body, headers = Receiver.deliveries[1]
            completed = body
            forged = body.replace(b"completed", b"failed")
            with pytest.raises(WebhookSignatureError):
                verify_webhook(forged, headers["Unlearn-Signature"], hook["secret"])

            def delivered() -> list[Delivery]:
                found = api.list_webhook_deliveries(hook["id"])
                return found if [d["state"] for d in found] == ["delivered"] * 2 else []

            deliveries = wait_for(delivered, 30, "both deliveries recorded as delivered")
            detail = api.get_webhook_delivery(deliveries[0]["id"])
            assert detail["attempts"] and detail["attempts"][0]["status_code"] == 204
            ping = api.ping_webhook(hook["id"])
            assert ping["event_type"] == "webhook.ping"
            wait_for(lambda: len(Receiver.deliveries) >= 3, 60, "the ping")
            body, headers = Receiver.deliveries[2]
            assert verify_webhook(body, headers["Unlearn-Signature"], hook["secret"]).type == (
                "webhook.ping"
            )
            rotated = api.rotate_webhook_secret(hook["id"])
            assert rotated["secret"] != hook["secret"]
            api.delete_webhook(hook["id"])
            assert api.list_webhooks() == []
            assert json.loads(completed)["type"] == "deletion.completed"
    finally:
        server.shutdown()
        server.server_close()
