"""RFC 9457 problem details for every error: domain errors, validation, HTTP and the unexpected.

A client never sees a traceback: an unexpected exception is logged server-side and answered
with a generic 500 problem.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import DomainError
from unlearning.artifacts import ArtifactStoreError

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://unlearn.dev/problems/"
log = logging.getLogger(__name__)


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, Any]] | None = None


_DESCRIPTIONS = {
    401: "Missing or unknown API key",
    403: "The key's role may not do this",
    404: "Not found for this key's tenant",
    409: "Conflicts with the current state",
    413: "The request body is too large",
    422: "Invalid input",
    429: "Too many write calls for this key; see Retry-After",
    503: "Temporarily unable to answer; retry",
}


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the problem statuses a route can answer."""
    return {code: {"model": Problem, "description": _DESCRIPTIONS[code]} for code in codes}


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    slug: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + slug if slug else "about:blank",
        "title": title,
        "status": status,
    }
    if detail is not None:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(
        jsonable_encoder(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    headers = getattr(exc, "headers", None)
    return problem_response(
        exc.status_code, exc.title, exc.detail, slug=exc.slug, headers=headers, **exc.extra
    )


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return problem_response(
        422,
        "Invalid request",
        "the request does not match the schema",
        slug="validation",
        errors=errors,
    )


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return problem_response(
        exc.status_code, str(exc.detail), headers=dict(exc.headers) if exc.headers else None
    )


async def unstorable_value(_request: Request, _exc: Exception) -> JSONResponse:
    # The database refused a value the schema let through: a NUL character in a text field, a
    # number out of its column's range. The input's fault, never the server's.
    return problem_response(
        422,
        "Unprocessable value",
        "a value cannot be stored (NUL characters or a number out of range)",
        slug="unstorable-value",
    )


async def _artifact_store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # The object store failed past its retries (a prediction reading weights it has not cached):
    # the service's dependency, not a bug of the request or the server.
    log.warning("artifact store unavailable on %s %s: %s", request.method, request.url.path, exc)
    return problem_response(
        503,
        "Artifact store unavailable",
        "the artifact store did not answer; retry later",
        slug="artifact-store-unavailable",
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, "Internal server error", "the error was logged", slug="internal")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ArtifactStoreError, _artifact_store_unavailable)
    app.add_exception_handler(Exception, _unexpected_error)
