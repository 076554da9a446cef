"""The admin dashboard over HTTP (SQLite and PostgreSQL, jobs run in this process): who may see
it, the layer grid following a deletion from valid to retraining and back, the drill-down pages
and the live parts. The browser test (tests/e2e/) drives the same pages in Chromium."""

from __future__ import annotations

import re
import uuid
from collections import Counter

import pytest
from fastapi.testclient import TestClient

from service.db.models import Role
from service.settings import Settings
from tests.integration.api import (
    TINY_MODEL,
    Api,
    InProcessWorker,
    auth,
    issue_keys,
    problem,
    samples,
    trained_model,
)

pytestmark = pytest.mark.integration
CELL = re.compile(
    r'data-shard="(\d+)" data-sequence="(\d+)" data-position="(\d+)" data-state="(\w+)"'
)


@pytest.fixture
def admin(settings: Settings) -> str:
    return issue_keys(settings, Role.admin)["a"]


def cells(html: str) -> dict[tuple[int, int, int], str]:
    return {(int(a), int(b), int(c)): state for a, b, c, state in CELL.findall(html)}


def login(client: TestClient, token: str) -> None:
    response = client.post(
        "/dashboard/login", data={"key": token, "next": "/dashboard"}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/dashboard"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie


def test_only_an_admin_sees_the_dashboard(
    client: TestClient, keys: dict[str, str], admin: str
) -> None:
    anonymous = client.get("/dashboard/models/x", follow_redirects=False)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/dashboard/login?next=/dashboard/models/x"
    assert client.get("/dashboard?part=jobs", headers={"X-Live": "1"}).status_code == 401
    problem(client.get("/dashboard", headers=auth(keys["a"])), 403)  # an app key
    assert client.get("/dashboard", headers=auth(admin)).status_code == 200

    refused = client.post("/dashboard/login", data={"key": keys["a"]}, follow_redirects=False)
    assert refused.status_code == 401 and "Not a live admin key" in refused.text
    assert "set-cookie" not in refused.headers
    off_site = client.post(
        "/dashboard/login", data={"key": admin, "next": "//evil.example"}, follow_redirects=False
    )
    assert off_site.headers["location"] == "/dashboard"

    login(client, admin)
    page = client.get("/dashboard")
    assert page.status_code == 200 and "Deletion queue" in page.text
    assert page.headers["cache-control"] == "no-store"
    stolen = client.cookies.get("unlearn_session")
    assert stolen is not None
    client.cookies.clear()
    client.cookies.set("unlearn_session", stolen[:-2] + "xx")
    assert client.get("/dashboard", follow_redirects=False).status_code == 303  # forged

    client.cookies.clear()
    client.cookies.set("unlearn_session", stolen)
    assert client.get("/dashboard", follow_redirects=False).status_code == 200
    listed = client.get("/keys", headers=auth(admin)).json()
    key_id = next(k["id"] for k in listed if admin.startswith(f"ul_{k['prefix']}_"))
    assert client.delete(f"/keys/{key_id}", headers=auth(admin)).status_code == 204
    assert client.get("/dashboard", follow_redirects=False).status_code == 303  # key revoked


def test_the_grid_follows_a_deletion_until_it_completes(
    client: TestClient, worker: InProcessWorker, admin: str, settings: Settings
) -> None:
    api = Api(client, admin)
    model_id = trained_model(api, worker, samples(24))
    login(client, admin)
    page = client.get(f"/dashboard/models/{model_id}")
    assert page.status_code == 200 and 'data-live="grid"' in page.text
    before = cells(client.get(f"/dashboard/models/{model_id}?part=grid").text)
    shards, slices, budget = (TINY_MODEL[k] for k in ("n_shards", "n_slices", "budget"))
    assert isinstance(shards, int) and isinstance(slices, int) and isinstance(budget, int)
    assert len(before) == shards * budget * slices
    assert set(before.values()) == {"valid"}

    deletion = api.ok(api.delete(model_id, sample_ids=["s003"]), 202)
    grid = client.get(f"/dashboard/models/{model_id}?part=grid").text
    during = cells(grid)
    status = api.ok(api.get(f"/models/{model_id}/status"))
    for shard in status["shards"]:
        for sequence in shard["sequences"]:
            parked = any(job["waiting"] for job in sequence["pending"])
            for position in range(1, slices + 1):
                expected = (
                    "valid"
                    if position <= sequence["valid_prefix"]
                    else "parked"  # waits while the order served first is retrained
                    if parked
                    else "retraining"
                )
                assert during[(shard["index"], sequence["index"], position)] == expected
    assert Counter(during.values())["retraining"] >= 1
    served = status["shards"][0]["serving"]
    assert grid.count(' served"') == sum(
        s["serving"]["stages"] for s in status["shards"] if s["serving"]
    ), "the served prefix of each shard is outlined"
    assert served is None or f"sequence {served['sequence']}" in grid

    queue = client.get("/dashboard?part=deletions").text
    assert f'data-deletion-id="{deletion["id"]}" data-status="deactivated"' in queue
    jobs = client.get(f"/dashboard/models/{model_id}?part=jobs").text
    assert 'data-status="queued"' in jobs and "retrain" in jobs

    assert worker.drain() >= 1
    after = cells(client.get(f"/dashboard/models/{model_id}?part=grid").text)
    assert set(after.values()) == {"valid"} and after.keys() == before.keys()
    queue = client.get("/dashboard?part=deletions").text
    assert f'data-deletion-id="{deletion["id"]}" data-status="completed"' in queue

    drill = client.get(f"/dashboard/deletions/{deletion['id']}")
    assert drill.status_code == 200
    assert "unlearning: exact" in drill.text and "Sample id hashes (hmac-sha256)" in drill.text
    assert 'data-status="completed"' in drill.text
    assert "audit chain verified" in drill.text
    job_id = deletion["jobs"][0]
    job = client.get(f"/dashboard/jobs/{job_id}")
    assert job.status_code == 200 and 'data-status="succeeded"' in job.text
    audit = client.get(f"/dashboard/models/{model_id}?part=audit").text
    assert 'data-audit-verified="true"' in audit and "deletion.deactivated" in audit

    overview = client.get("/dashboard").text
    for part in ("models", "charts", "deletions", "jobs"):
        assert f'data-live="{part}"' in overview
        assert client.get(f"/dashboard?part={part}").status_code == 200
    assert "Deletions received" in overview and "<rect" in overview  # a bar for this deletion
    assert client.get("/dashboard?part=nope").status_code == 422
    assert client.get(f"/dashboard/models/{uuid.uuid4()}").status_code == 404
    other_tenant = issue_keys(settings, Role.admin)["b"]
    problem(client.get(f"/dashboard/models/{model_id}", headers=auth(other_tenant)), 404)
    assert "s003" not in drill.text + overview, "no external id on the dashboard"
