"""The client checks a model's audit log on its own side (``verify_audit_log``), on SQLite and
PostgreSQL through the app in this process: the service's real chain verifies link by link, a
pinned head verifies again after the log grew, and an entry edited on its way to the client (a
service or a proxy that lies; the database refuses edits) breaks the check at that entry."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.db.models import Role
from service.settings import Settings
from tests.integration.api import TINY_MODEL, issue_keys, samples
from unlearn_client import GENESIS_HASH, UnlearnClient, entry_hash

pytestmark = pytest.mark.integration


class InProcess(httpx.BaseTransport):
    """The app in this process, through the test client's transport (its answers read whole,
    as a plain ``httpx.Client`` wants them); ``tamper`` may rewrite an audit page on the way."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.tamper: Callable[[dict[str, Any]], None] | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        transport: Any = self.client._transport  # starlette's, typed for its own httpx
        answer = transport.handle_request(request)
        answer.read()
        content = answer.content
        if self.tamper is not None and request.url.path.endswith("/audit"):
            page = json.loads(content)
            self.tamper(page)
            content = json.dumps(page).encode()
        headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-length"}
        return httpx.Response(answer.status_code, headers=headers, content=content)


@pytest.fixture
def wire(client: TestClient) -> InProcess:
    return InProcess(client)


@pytest.fixture
def api(wire: InProcess, keys: dict[str, str]) -> Iterator[UnlearnClient]:
    with UnlearnClient("http://testserver", keys["a"], transport=wire) as api:
        yield api


def test_the_services_chain_verifies_here_and_an_edit_breaks_it(
    api: UnlearnClient, wire: InProcess
) -> None:
    settings: dict[str, Any] = {k: v for k, v in TINY_MODEL.items() if k not in ("name", "labels")}
    model = api.create_model("tiny", labels=["neg", "pos"], **settings)
    api.register_samples(model["id"], samples(6, subjects={1: "user-1"}))
    api.request_deletion(model["id"], sample_ids=["s002"])
    check = api.verify_audit_log(model["id"])
    page = api.audit_log(model["id"])
    assert check.ok and check.entries == page["verification"]["entries"] >= 2, check
    assert check.head == (page["entries"][-1]["seq"], page["entries"][-1]["hash"])

    api.delete_subject(model["id"], "user-1")  # the log grows: the pinned head still holds
    grown = api.verify_audit_log(model["id"], pinned=check.head)
    assert grown.ok and grown.entries > check.entries

    (deactivated,) = [e for e in page["entries"] if e["action"] == "deletion.deactivated"]

    def fewer_deleted(page: dict[str, Any]) -> None:
        for entry in page["entries"]:
            if entry["seq"] == deactivated["seq"]:
                entry["payload"]["counts"]["deleted"] = 0

    wire.tamper = fewer_deleted
    assert api.audit_log(model["id"])["verification"]["ok"]  # the service's word
    broken = api.verify_audit_log(model["id"])
    assert not broken.ok
    assert (broken.first_bad_seq, broken.reason) == (
        deactivated["seq"],
        "hash does not match content",
    )

    def history_rewritten(page: dict[str, Any]) -> None:  # every link recomputed by the liar
        previous = GENESIS_HASH
        for entry in page["entries"]:
            if entry["seq"] == deactivated["seq"]:
                entry["payload"]["counts"]["deleted"] = 0
            entry["prev_hash"] = previous
            entry["hash"] = previous = entry_hash(page["chain"], entry)

    wire.tamper = history_rewritten
    assert api.verify_audit_log(model["id"]).ok  # consistent in itself: only a pin shows it
    rewritten = api.verify_audit_log(model["id"], pinned=check.head)
    assert (rewritten.ok, rewritten.reason) == (False, "the pinned entry changed")


def test_pages_by_cursor_and_the_services_full_verification(
    wire: InProcess, settings: Settings
) -> None:
    admin_key = issue_keys(settings, Role.admin)["a"]
    options: dict[str, Any] = {k: v for k, v in TINY_MODEL.items() if k not in ("name", "labels")}
    with UnlearnClient("http://testserver", admin_key, transport=wire) as admin:
        model = admin.create_model("tiny", labels=["neg", "pos"], **options)
        admin.register_samples(model["id"], samples(6))
        admin.request_deletion(model["id"], sample_ids=["s002"])
        first = admin.audit_log(model["id"], limit=1)
        cursor = first.get("next_cursor")
        assert cursor is not None
        second = admin.audit_log(model["id"], limit=1, cursor=cursor)
        assert [e["seq"] for e in first["entries"] + second["entries"]] == [1, 2]

        full = admin.verify_audit_log_on_service(model["id"])
        done = full.get("full_verification")
        assert full["ok"]
        assert done is not None
        assert done["through_seq"] == len(list(admin.iter_audit_log(model["id"])))
        audit = admin.model_status(model["id"]).get("audit")
        assert audit is not None
        assert audit["full_verification"] == done
