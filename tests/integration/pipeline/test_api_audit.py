"""The audit log over HTTP, on SQLite and PostgreSQL: pages by cursor, the chain's incremental
verification in every read, the full verification as an admin action whose result the reads,
the status and the dashboard report, and identifier checks under their own rate limit."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import AuditEntry
from service.settings import Settings
from tests.integration.api import TINY_MODEL, Api, auth, problem, samples

pytestmark = pytest.mark.integration


def _model_with_history(api: Api, deletions: int = 3) -> str:
    model_id: str = api.ok(api.post("/models", TINY_MODEL), 201)["id"]
    api.ok(api.post(f"/models/{model_id}/samples", {"samples": samples(8)}))
    for i in range(deletions):
        api.ok(api.delete(model_id, sample_ids=[f"s00{i}"]), 202)
    return model_id


def _pages(api: Api, model_id: str, limit: int) -> list[dict[str, Any]]:
    pages = [api.ok(api.get(f"/models/{model_id}/audit", params={"limit": limit}))]
    while pages[-1]["next_cursor"] is not None:
        params = {"limit": limit, "cursor": pages[-1]["next_cursor"]}
        pages.append(api.ok(api.get(f"/models/{model_id}/audit", params=params)))
    return pages


def _tamper(db: sessionmaker[Session], chain: str, seq: int) -> None:
    """Edit an entry as an attacker with DDL rights would (the guard comes back after)."""
    with db() as session, session.begin():
        postgres = session.get_bind().dialect.name == "postgresql"
        if postgres:
            session.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update"))
        else:
            session.execute(sa.text("DROP TRIGGER audit_log_no_update"))
        session.execute(
            sa.update(AuditEntry)
            .where(AuditEntry.chain == chain, AuditEntry.seq == seq)
            .values(action="forged")
        )
        if postgres:
            session.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update"))


def test_the_log_pages_by_cursor(api: Api) -> None:
    model_id = _model_with_history(api)
    whole = api.ok(api.get(f"/models/{model_id}/audit", params={"limit": 500}))
    count = len(whole["entries"])
    assert count >= 5 and whole["next_cursor"] is None and whole["next_after_seq"] is None

    pages = _pages(api, model_id, limit=2)
    seqs = [entry["seq"] for page in pages for entry in page["entries"]]
    assert seqs == list(range(1, count + 1))
    assert all(len(page["entries"]) == 2 for page in pages[:-1])
    assert pages[0]["next_after_seq"] == 2  # the old field, for clients before cursors
    by_seq = api.ok(api.get(f"/models/{model_id}/audit", params={"limit": 2, "after_seq": 2}))
    assert by_seq["entries"] == pages[1]["entries"]
    for page in pages:
        check = page["verification"]
        assert check["ok"] and check["verified_through_seq"] == count
        full = check["full_verification"]  # the API's housekeeping may have run one
        assert full is None or full["ok"]
    problem(api.get(f"/models/{model_id}/audit", params={"cursor": "bm9wZQ=="}), 422)


def test_full_verification_is_an_admin_action_reported_everywhere(
    api: Api, admin: Api, db: sessionmaker[Session]
) -> None:
    model_id = _model_with_history(admin)
    problem(api.post(f"/models/{model_id}/audit/verify"), 403)  # an app key
    full = admin.ok(admin.post(f"/models/{model_id}/audit/verify"))
    count = len(admin.ok(admin.get(f"/models/{model_id}/audit", params={"limit": 500}))["entries"])
    assert full["ok"] and full["full_verification"]["through_seq"] == count
    status = admin.ok(admin.get(f"/models/{model_id}/status"))
    assert (
        status["audit"]["ok"] and status["audit"]["full_verification"] == full["full_verification"]
    )

    chain = f"model:{model_id}"
    _tamper(db, chain, 2)  # behind the checkpoint: reads of the newest page do not see it
    newest = {"limit": 1, "after_seq": count - 1}
    assert admin.ok(admin.get(f"/models/{model_id}/audit", params=newest))["verification"]["ok"]
    broken = admin.ok(admin.post(f"/models/{model_id}/audit/verify"))
    assert not broken["ok"] and broken["first_bad_seq"] == 2
    assert broken["full_verification"]["ok"] is False
    read = admin.ok(admin.get(f"/models/{model_id}/audit", params=newest))["verification"]
    assert not read["ok"] and read["first_bad_seq"] == 2
    status = admin.ok(admin.get(f"/models/{model_id}/status"))
    assert not status["audit"]["ok"]
    assert any(w.startswith("audit chain broken at seq 2") for w in status["warnings"])

    deletion = admin.ok(admin.get("/deletions", params={"model_id": model_id}))["items"][0]
    certificate = admin.ok(admin.get(f"/deletions/{deletion['id']}/certificate"))
    assert certificate["audit_chain_verified"] is False
    assert certificate["audit_verification"]["first_bad_seq"] == 2

    admin.client.cookies.clear()
    login = admin.client.post(
        "/dashboard/login",
        data={"key": admin.headers["Authorization"].removeprefix("Bearer "), "next": "/"},
        follow_redirects=False,
    )
    assert login.status_code == 303
    panel = admin.client.get(f"/dashboard/models/{model_id}?part=audit").text
    assert 'data-audit-verified="false"' in panel and 'data-audit-full="false"' in panel
    assert "BROKEN at #2" in panel


def test_a_certificate_cites_its_own_entries_and_checks_the_chain(api: Api) -> None:
    model_id = _model_with_history(api, deletions=2)
    listed = api.ok(api.get("/deletions", params={"model_id": model_id}))["items"]
    first, second = sorted(listed, key=lambda d: d["received_at"])
    certificate = api.ok(api.get(f"/deletions/{first['id']}/certificate"))
    assert certificate["audit_chain_verified"] is True
    assert certificate["audit_verification"]["ok"]
    entries = api.ok(api.get(f"/models/{model_id}/audit", params={"limit": 500}))["entries"]
    own = [
        e["seq"]
        for e in entries
        if e["payload"].get("deletion_id") == first["id"]
        or first["id"] in e["payload"].get("deletion_ids", ())
    ]
    assert own and [link["seq"] for link in certificate["audit_entries"]] == own
    other = api.ok(api.get(f"/deletions/{second['id']}/certificate"))
    assert {e["seq"] for e in other["audit_entries"]}.isdisjoint(own)


class TestVerifyRateLimit:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"verify_rate_per_minute": 3})

    def test_identifier_checks_are_limited_per_key(
        self, client: TestClient, keys: dict[str, str]
    ) -> None:
        api = Api(client, keys["a"])
        model_id = _model_with_history(api, deletions=1)
        deletion = api.ok(api.get("/deletions", params={"model_id": model_id}))["items"][0]
        url = f"/deletions/{deletion['id']}/verify"
        for guess in ("s000", "s001", "s002"):
            assert api.post(url, {"sample_id": guess}).status_code == 200
        limited = api.post(url, {"sample_id": "s003"})
        body = problem(limited, 429)
        assert int(limited.headers["retry-after"]) >= 1 and "identifier checks" in body["detail"]
        # Writes keep their own budget, and another key has its own checks.
        assert api.post("/models", TINY_MODEL).status_code == 201
        other = client.post(url, json={"sample_id": "s000"}, headers=auth(keys["b"]))
        assert other.status_code == 404  # not rate limited: another tenant's deletion
