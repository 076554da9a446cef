"""Access control: keys stored hashed, listed without secrets, rotated and revoked by a tenant's
admins only; roles and tenants enforced; write calls rate-limited per key; CORS off by default."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.db.engine import make_engine
from service.db.models import ApiKey, Role
from service.settings import Settings
from tests.integration.api import TINY_MODEL, auth, issue_keys, problem

pytestmark = pytest.mark.integration


@pytest.fixture
def admins(settings: Settings) -> dict[str, str]:
    """An admin key of tenant a and one of tenant b."""
    return issue_keys(settings, Role.admin)


def test_keys_are_issued_rotated_and_revoked_by_admins_only(
    client: TestClient, settings: Settings, admins: dict[str, str], keys: dict[str, str]
) -> None:
    admin = auth(admins["a"])
    issued = client.post("/keys", json={"name": "ci", "role": "app"}, headers=admin)
    assert issued.status_code == 201, issued.text
    token, key_id = issued.json()["token"], issued.json()["key"]["id"]
    assert client.post("/models", json=TINY_MODEL, headers=auth(token)).status_code == 201

    listed = client.get("/keys", headers=admin)
    assert listed.status_code == 200 and key_id in {k["id"] for k in listed.json()}
    assert token not in listed.text and "token" not in listed.text
    engine = make_engine(settings.database_url)
    with engine.connect() as conn:  # only a hash of the secret is stored
        hashes = conn.scalars(sa.select(ApiKey.key_hash)).all()
    engine.dispose()
    assert not any(token.split("_", 2)[2] in h for h in hashes)

    rotated = client.post(f"/keys/{key_id}/rotate", headers=admin)
    assert rotated.status_code == 201
    new = rotated.json()["token"]
    problem(client.get("/keys", headers=auth(token)), 401)  # the old one stopped at once
    assert client.post("/models", json=TINY_MODEL, headers=auth(new)).status_code == 201

    new_id = rotated.json()["key"]["id"]
    problem(client.delete(f"/keys/{new_id}", headers=auth(admins["b"])), 404)  # other tenant
    problem(client.get("/keys", headers=auth(keys["a"])), 403)  # an app key
    problem(client.post("/keys", json={"name": "x"}, headers=auth(keys["a"])), 403)
    assert client.delete(f"/keys/{new_id}", headers=admin).status_code == 204
    problem(client.post("/models", json=TINY_MODEL, headers=auth(new)), 401)


class TestRateLimit:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"write_rate_per_minute": 3})

    def test_write_calls_are_limited_per_key(
        self, client: TestClient, keys: dict[str, str]
    ) -> None:
        headers = auth(keys["a"])
        for _ in range(3):
            created = client.post("/models", json=TINY_MODEL, headers=headers)
            assert created.status_code == 201
        limited = client.post("/models", json=TINY_MODEL, headers=headers)
        body = problem(limited, 429)
        assert int(limited.headers["retry-after"]) >= 1 and body["retry_after_s"] >= 1
        model_id = created.json()["id"]
        assert client.get(f"/models/{model_id}", headers=headers).status_code == 200  # reads
        other = client.post("/models", json=TINY_MODEL, headers=auth(keys["b"]))
        assert other.status_code == 201  # another key has its own budget


def test_cors_is_off_by_default(client: TestClient) -> None:
    response = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options(
        "/deletions",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


class TestCorsAllowed:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"cors_origins": ["https://admin.example"]})

    def test_only_the_configured_origin_is_allowed(self, client: TestClient) -> None:
        ok = client.get("/healthz", headers={"Origin": "https://admin.example"})
        assert ok.headers["access-control-allow-origin"] == "https://admin.example"
        other = client.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
