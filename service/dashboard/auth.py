"""Who may see the dashboard: an admin key, sent as a Bearer header or held by a login cookie."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request

from service.api.auth import admin_key, current_key
from service.api.deps import SessionDep, SettingsDep
from service.dashboard import session as cookies
from service.db.models import ApiKey, Role
from service.db.repositories import ApiKeyRepository, DashboardSessionRepository


class LoginRequired(Exception):  # noqa: N818 (a signal to redirect, not an error report)
    """No admin login: pages redirect to the login form, live parts answer 401."""


def dashboard_admin(request: Request, session: SessionDep, settings: SettingsDep) -> ApiKey:
    if "authorization" in request.headers:
        return admin_key(current_key(request, session))
    cookie = request.cookies.get(cookies.COOKIE)
    assert settings.dashboard_session_secret is not None
    login_id = (
        cookies.verify(cookie, settings.dashboard_session_secret.get_secret_value())
        if cookie
        else None
    )
    key = DashboardSessionRepository.from_session(session).key_of(login_id) if login_id else None
    if key is None or key.role is not Role.admin:
        raise LoginRequired
    return key


def login(session: SessionDep, token: str) -> ApiKey | None:
    """The admin key behind a pasted token, or None."""
    key = ApiKeyRepository.from_session(session).authenticate(token.strip())
    return key if key is not None and key.role is Role.admin else None


def start_login(session: SessionDep, key: ApiKey, settings: SettingsDep) -> str:
    """A new server-side login for ``key``: the signed cookie value that names it."""
    assert settings.dashboard_session_secret is not None
    ttl = settings.dashboard_session_ttl_s
    logins = DashboardSessionRepository.from_session(session)
    login_row = logins.start(key.id, timedelta(seconds=ttl))
    return cookies.sign(login_row.id, settings.dashboard_session_secret.get_secret_value(), ttl)


def end_login(session: SessionDep, cookie: str | None, settings: SettingsDep) -> None:
    """End the login a (well-signed) cookie names, so that no copy of it works any more."""
    assert settings.dashboard_session_secret is not None
    secret = settings.dashboard_session_secret.get_secret_value()
    login_id = cookies.verify(cookie, secret) if cookie else None
    if login_id is not None:
        DashboardSessionRepository.from_session(session).end(login_id)


DashboardAdmin = Annotated[ApiKey, Depends(dashboard_admin)]


def dashboard_writer(request: Request, admin: DashboardAdmin) -> ApiKey:
    """A dashboard button that writes (ping, redeliver): it spends the key's write rate limit as
    the API's routes do, whether the key came by cookie or Bearer header; beyond it a 429."""
    request.app.state.rate_limiter.take(admin.id)
    return admin


DashboardWriter = Annotated[ApiKey, Depends(dashboard_writer)]
