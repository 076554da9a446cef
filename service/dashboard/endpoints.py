"""``/dashboard``: server-rendered admin pages. Each page's live parts are fetched again with
``?part=<name>`` and swapped in place by ``static/live.js``; nothing needs a page reload."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, FastAPI, Query, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from service.api.deps import SessionDep, SettingsDep
from service.dashboard import session as cookies
from service.dashboard import views
from service.dashboard.auth import (
    DashboardAdmin,
    DashboardWriter,
    LoginRequired,
    end_login,
    login,
    start_login,
)
from service.webhooks import service as webhooks

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/dashboard", include_in_schema=False)

OverviewPart = Literal["models", "charts", "deletions", "jobs", "webhooks"]
ModelPart = Literal["grid", "deletions", "jobs", "quality", "exactness", "audit"]


def _age(at: datetime, now: datetime) -> str:
    seconds = max((now - at).total_seconds(), 0.0)
    return _duration(seconds)


def _took(start: datetime, end: datetime | None) -> str:
    return _duration((end - start).total_seconds()) if end is not None else "-"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


templates.env.filters["age"] = _age
templates.env.filters["took"] = _took


def _render(
    request: Request, template: str, part: str | None, settings: SettingsDep, **context: Any
) -> HTMLResponse:
    name = f"parts/{part}.html" if part else f"{template}.html"
    response = templates.TemplateResponse(
        request,
        name,
        {"refresh_ms": int(settings.dashboard_refresh_s * 1000), "states": views.STATES, **context},
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("")
def overview(
    request: Request,
    admin: DashboardAdmin,
    session: SessionDep,
    settings: SettingsDep,
    part: OverviewPart | None = None,
) -> HTMLResponse:
    page = views.Overview(session, admin.tenant_id)
    return _render(request, "overview", part, settings, admin=admin, page=page)


@router.get("/models/{model_id}")
def model(
    model_id: uuid.UUID,
    request: Request,
    admin: DashboardAdmin,
    session: SessionDep,
    settings: SettingsDep,
    part: ModelPart | None = None,
) -> HTMLResponse:
    page = views.ModelPage(session, admin.tenant_id, model_id)
    return _render(request, "model", part, settings, admin=admin, page=page)


@router.get("/deletions/{deletion_id}")
def deletion(
    deletion_id: uuid.UUID,
    request: Request,
    admin: DashboardAdmin,
    session: SessionDep,
    settings: SettingsDep,
    part: Literal["deletion"] | None = None,
) -> HTMLResponse:
    page = views.deletion_page(session, admin.tenant_id, deletion_id)
    return _render(request, "deletion", part, settings, admin=admin, page=page)


@router.get("/jobs/{job_id}")
def job(
    job_id: uuid.UUID,
    request: Request,
    admin: DashboardAdmin,
    session: SessionDep,
    settings: SettingsDep,
    part: Literal["job"] | None = None,
) -> HTMLResponse:
    job = views.job_page(session, admin.tenant_id, job_id)
    return _render(request, "job", part, settings, admin=admin, job=job)


@router.post("/webhook-deliveries/{delivery_id}/redeliver")
def redeliver(delivery_id: uuid.UUID, admin: DashboardWriter, session: SessionDep) -> Response:
    """The overview's redeliver button: queue the delivery again, back to the overview (the
    login cookie is SameSite=strict: another site cannot post this form); rate-limited as a
    write."""
    webhooks.redeliver(session, admin.tenant_id, delivery_id)
    return RedirectResponse("/dashboard", status_code=status.HTTP_303_SEE_OTHER)


@router.post("/webhooks/{webhook_id}/ping")
def ping(webhook_id: uuid.UUID, admin: DashboardWriter, session: SessionDep) -> Response:
    """The overview's ping button: send the endpoint a `webhook.ping`, back to the overview;
    rate-limited as a write."""
    webhooks.ping(session, admin.tenant_id, webhook_id)
    return RedirectResponse("/dashboard", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/login")
def login_form(
    request: Request,
    settings: SettingsDep,
    next_page: Annotated[str, Query(alias="next", max_length=500)] = "/dashboard",
) -> HTMLResponse:
    return _render(request, "login", None, settings, next=_safe_next(next_page), error=None)


@router.post("/login", response_model=None)
async def login_submit(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    next_page = _safe_next(form.get("next", ["/dashboard"])[0])
    key = login(session, form.get("key", [""])[0])
    if key is None:
        response = _render(
            request, "login", None, settings, next=next_page, error="Not a live admin key."
        )
        response.status_code = status.HTTP_401_UNAUTHORIZED
        return response
    cookie = start_login(session, key, settings)
    redirect = RedirectResponse(next_page, status_code=status.HTTP_303_SEE_OTHER)
    redirect.set_cookie(
        cookies.COOKIE,
        cookie,
        max_age=settings.dashboard_session_ttl_s,
        path="/dashboard",
        httponly=True,
        samesite="strict",
        # https as the client sees it: behind a TLS proxy the scheme comes from its forwarded
        # headers, trusted only from UNLEARN_TRUSTED_PROXIES (service/app.py)
        secure=request.url.scheme == "https",
    )
    return redirect


@router.post("/logout")
def logout(request: Request, session: SessionDep, settings: SettingsDep) -> RedirectResponse:
    """End the login on the server too: a copy of the cookie no longer works."""
    end_login(session, request.cookies.get(cookies.COOKIE), settings)
    response = RedirectResponse("/dashboard/login", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(cookies.COOKIE, path="/dashboard")
    return response


def _safe_next(target: str) -> str:
    """Only a dashboard path: a login never redirects off the site."""
    ok = target.startswith("/dashboard") and "//" not in target and "\\" not in target
    return target if ok else "/dashboard"


async def _login_required(request: Request, _exc: Exception) -> Response:
    if request.headers.get("x-live"):  # a live part: the script sends the browser to log in
        return Response(status_code=status.HTTP_401_UNAUTHORIZED)
    target = f"/dashboard/login?next={quote(request.url.path)}"
    return RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")
    app.add_exception_handler(LoginRequired, _login_required)
