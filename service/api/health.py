"""Liveness and readiness."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from service.api.deps import SettingsDep
from service.api.problems import Problem, problem_response
from service.readiness import check_broker, check_database

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, str]


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """Liveness: the process is up and answering."""
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Problem, "description": "a dependency is unreachable"}},
)
def readyz(request: Request, settings: SettingsDep) -> Readiness | JSONResponse:
    """Readiness: the lineage database, the broker and the object store (if any) answer."""
    engine = request.app.state.engine
    checks: dict[str, str] = {}
    failures: list[str] = []
    probes: dict[str, Callable[[], None]] = {
        "database": partial(check_database, engine),
        "broker": partial(check_broker, settings.broker_url, settings.readiness_timeout_s),
    }
    artifacts: Callable[[], None] | None = getattr(request.app.state, "artifacts_probe", None)
    if artifacts is not None:
        probes["artifacts"] = artifacts
    for name, probe in probes.items():
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:  # any failure of a dependency means "not ready"
            checks[name] = "unreachable"
            failures.append(f"{name}: {type(exc).__name__}")
    if failures:
        return problem_response(
            503, "Not ready", "; ".join(failures), slug="not-ready", checks=checks
        )
    return Readiness(checks=checks)
