"""The dashboard's login and the metrics token against hostile or unusual input: malformed
cookies and tokens are a 401 (never a 500), a logout ends the login on the server, the cookie
is `Secure` behind a trusted TLS proxy only, and production refuses an open `/metrics`."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.app import create_app
from service.db.models import Role
from service.settings import Settings
from tests.integration.api import issue_keys

pytestmark = pytest.mark.integration
COOKIE = "unlearn_session"


@pytest.fixture
def admin(settings: Settings) -> str:
    return issue_keys(settings, Role.admin)["a"]


def log_in(client: TestClient, token: str, **headers: str) -> str:
    response = client.post(
        "/dashboard/login", data={"key": token}, headers=headers, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    return response.headers["set-cookie"]


@pytest.mark.parametrize("value", ["é.1.x", "ü" * 40, "\u00ff.\u00ff.\u00ff"])
def test_a_non_ascii_cookie_is_a_login_not_a_500(client: TestClient, value: str) -> None:
    raw = f"{COOKIE}={value}".encode("latin-1")  # the bytes a browser may send as they are
    page = client.get("/dashboard", headers={"cookie": raw}, follow_redirects=False)  # type: ignore[arg-type]
    assert page.status_code == 303 and page.headers["location"].startswith("/dashboard/login")
    live = client.get("/dashboard?part=jobs", headers={"cookie": raw, "x-live": "1"})  # type: ignore[arg-type]
    assert live.status_code == 401


def test_a_non_ascii_metrics_token_is_a_401(settings: Settings) -> None:
    guarded = settings.model_copy(update={"metrics_token": SecretStr("s3cret")})
    with TestClient(create_app(guarded), raise_server_exceptions=False) as client:
        for token in ("é", "s3cr\u00e9t", "\u00ff" * 64):
            sent = f"Bearer {token}".encode("latin-1")
            response = client.get("/metrics", headers={"authorization": sent})  # type: ignore[arg-type]
            assert response.status_code == 401, (token, response.status_code)
        ok = client.get("/metrics", headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200


def test_logout_ends_the_login_on_the_server(client: TestClient, admin: str) -> None:
    log_in(client, admin)
    copied = client.cookies.get(COOKIE)
    assert copied is not None
    assert client.get("/dashboard", follow_redirects=False).status_code == 200
    assert client.post("/dashboard/logout", follow_redirects=False).status_code == 303
    client.cookies.clear()
    client.cookies.set(COOKIE, copied, path="/dashboard")  # a copy taken before the logout
    assert client.get("/dashboard", follow_redirects=False).status_code == 303
    client.cookies.clear()
    log_in(client, admin)  # a new login works, and is a new one
    assert client.cookies.get(COOKIE) != copied
    assert client.get("/dashboard", follow_redirects=False).status_code == 200


@pytest.mark.parametrize(("trusted", "secure"), [("127.0.0.1", False), ("testclient", True)])
def test_the_cookie_is_secure_behind_a_trusted_tls_proxy_only(
    settings: Settings, admin: str, trusted: str, secure: bool
) -> None:
    """TestClient's peer is `testclient`: its X-Forwarded-Proto counts once it is trusted."""
    behind = settings.model_copy(update={"trusted_proxies": trusted})
    with TestClient(create_app(behind), raise_server_exceptions=False) as client:
        cookie = log_in(client, admin, **{"x-forwarded-proto": "https"})
    assert ("Secure" in cookie) is secure, cookie


def test_production_refuses_to_start_with_an_open_metrics_endpoint(settings: Settings) -> None:
    values = {
        "environment": "production",
        "database_url": "postgresql+psycopg://u@127.0.0.1/x",
        "data_dir": settings.data_dir,
    }
    with pytest.raises(ValueError, match="UNLEARN_METRICS_TOKEN must be set in production"):
        Settings(**values)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="UNLEARN_METRICS_TOKEN must be set in production"):
        Settings(**values, metrics_token="")  # type: ignore[arg-type]
    assert Settings(**values, metrics_token="t").production  # type: ignore[arg-type]
