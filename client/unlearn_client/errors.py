"""The exceptions the client raises: one base, and an ``ApiError`` per kind of problem answer.

The service answers every error with an RFC 9457 problem document (``type``, ``title``,
``status``, ``detail`` and sometimes more, e.g. a validation error's ``errors``); the exception
carries all of it in ``problem`` so that nothing the server said is lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unlearn_client.models import SamplesResult


class UnlearnError(Exception):
    """Base of every error this package raises."""

    #: Set by ``register_samples`` on the error that stopped it: what the batches before the
    #: failed one stored (None when none had).
    partial: SamplesResult | None = None


class NetworkError(UnlearnError):
    """The service could not be reached or did not answer in time (after the retries the call
    allows); the httpx exception is the ``__cause__``."""


class ApiError(UnlearnError):
    """The service answered with an error status; ``problem`` is its problem document."""

    def __init__(
        self,
        status: int,
        problem: Mapping[str, Any],
        *,
        method: str = "",
        url: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.problem: dict[str, Any] = dict(problem)
        self.type: str = str(problem.get("type", "about:blank"))
        self.title: str = str(problem.get("title", ""))
        detail = problem.get("detail")
        self.detail: str | None = None if detail is None else str(detail)
        self.method = method
        self.url = url
        self.headers: dict[str, str] = dict(headers or {})
        text = f"{status} {self.title}"
        if self.detail:
            text += f": {self.detail}"
        if method:
            text += f" ({method} {url})"
        super().__init__(text)

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The validation errors of a 422 (``loc``, ``msg``, ``type``), else empty."""
        errors = self.problem.get("errors")
        return list(errors) if isinstance(errors, list) else []


class AuthenticationError(ApiError):
    """401: a missing, unknown or revoked key (403, :class:`PermissionDeniedError`, is one too)."""


class PermissionDeniedError(AuthenticationError):
    """403: the key's role may not do this (an ``app`` key on an admin route)."""


class NotFoundError(ApiError):
    """404: no such resource for this key's tenant (another tenant's is a 404 too)."""


class ConflictError(ApiError):
    """409: the call conflicts with the current state (training, an idempotency key reused with
    another body, a deletion that did not fail, ...)."""


class PayloadTooLargeError(ApiError):
    """413: the request body is larger than the service accepts."""


class ValidationError(ApiError):
    """422: invalid input; :attr:`errors` lists the fields when the schema refused it."""


class RateLimitedError(ApiError):
    """429: too many write calls for this key; ``retry_after`` is the server's ``Retry-After``
    in seconds (None when it sent none)."""

    def __init__(
        self,
        status: int,
        problem: Mapping[str, Any],
        *,
        method: str = "",
        url: str = "",
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, problem, method=method, url=url, headers=headers)
        self.retry_after = retry_after


class ServerError(ApiError):
    """5xx: the service (or a proxy in front of it) failed or is unavailable."""


class OperationFailedError(UnlearnError):
    """A wait ended because the resource failed (a model whose training failed, a deletion in
    state ``failed``); ``resource`` is its last representation."""

    def __init__(self, message: str, resource: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.resource: dict[str, Any] = dict(resource)


class WaitTimeout(UnlearnError, TimeoutError):  # noqa: N818 - the name the callers know
    """A wait ran past its timeout; ``last`` is the resource as last seen."""

    def __init__(self, message: str, last: Mapping[str, Any] | None) -> None:
        super().__init__(message)
        self.last: dict[str, Any] | None = None if last is None else dict(last)


class WebhookSignatureError(UnlearnError):
    """A webhook delivery that must be rejected: a missing or malformed signature header (the
    Standard Webhooks ``webhook-*`` ones or ``Unlearn-Signature``; a timestamp that is no unix
    time), no signature matching a secret, a timestamp outside the tolerance (a replay), or a
    signed body that is not an event (or whose id is not the signed ``webhook-id``)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
}


def error_class(status: int) -> type[ApiError]:
    """The exception class of an error status (429 aside: it takes ``retry_after``)."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return ServerError
    return ApiError
