"""Domain errors. Each carries the HTTP status and problem type the API maps it to."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error the service reports to a caller (RFC 9457 problem details)."""

    status_code = 400
    title = "Bad request"
    slug = "bad-request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFoundError(DomainError):
    status_code = 404
    title = "Not found"
    slug = "not-found"


class ConflictError(DomainError):
    status_code = 409
    title = "Conflict"
    slug = "conflict"


class InvalidInputError(DomainError):
    status_code = 422
    title = "Invalid input"
    slug = "invalid-input"


class ModelNotFoundError(NotFoundError):
    title = "Model not found"
    slug = "model-not-found"


class TenantNotFoundError(NotFoundError):
    title = "Tenant not found"
    slug = "tenant-not-found"


class DeletionNotFoundError(NotFoundError):
    title = "Deletion request not found"
    slug = "deletion-not-found"


class KeyNotFoundError(NotFoundError):
    pass


class JobNotFoundError(NotFoundError):
    title = "Job not found"
    slug = "job-not-found"


class DuplicateSampleError(ConflictError):
    title = "Duplicate sample"
    slug = "duplicate-sample"


class DuplicateTenantError(ConflictError):
    title = "Tenant exists"
    slug = "duplicate-tenant"


class IdempotencyConflictError(ConflictError):
    title = "Idempotency key reused with another body"
    slug = "idempotency-conflict"


class InvalidSampleError(InvalidInputError):
    title = "Invalid sample"
    slug = "invalid-sample"


class EvalSplitFullError(ConflictError):
    """A model's evaluation split holds its cap of live samples."""

    title = "Evaluation split full"
    slug = "eval-split-full"


class InvalidImageError(InvalidInputError):
    """An image that is not base64 of a PNG or JPEG within the size and pixel limits."""

    title = "Invalid image"
    slug = "invalid-image"


class WrongModalityError(InvalidInputError):
    """A text for an image model, or an image for a text model."""

    title = "Wrong kind of input for this model"
    slug = "wrong-modality"


class WrongTaskError(InvalidInputError):
    """A prediction asked of a causal LM, or a generation or score asked of a classifier."""

    title = "Wrong endpoint for this model's task"
    slug = "wrong-task"


class InvalidModelConfigError(InvalidInputError):
    title = "Invalid model configuration"
    slug = "invalid-model-config"


class LineageError(ConflictError):
    """A lineage operation that does not fit the current state (e.g. a gap in a layer chain)."""

    title = "Lineage conflict"
    slug = "lineage-conflict"


class UnauthenticatedError(DomainError):
    status_code = 401
    title = "Unauthenticated"
    slug = "unauthenticated"


class ForbiddenError(DomainError):
    status_code = 403
    title = "Forbidden"
    slug = "forbidden"


class RateLimitedError(DomainError):
    status_code = 429
    title = "Too many requests"
    slug = "rate-limited"

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail, retry_after_s=retry_after_s)
        self.headers = {"Retry-After": str(retry_after_s)}


class ServingUnavailableError(DomainError):
    status_code = 503
    title = "Serving busy"
    slug = "serving-busy"


class BaseModelNotFoundError(NotFoundError):
    title = "Base model not found"
    slug = "base-model-not-found"


class BaseModelInUseError(ConflictError):
    title = "Base model in use"
    slug = "base-model-in-use"


class InvalidBaseModelError(InvalidInputError):
    """A folder or URI that cannot be registered (unsupported architecture, no weights)."""

    title = "Invalid base model"
    slug = "invalid-base-model"


class BaseModelUnavailableError(DomainError):
    """A base model this process cannot load now: its files changed since registration, or
    its folder or object-store prefix cannot be read. Its models answer nothing until an
    operator restores the registered files."""

    status_code = 503
    title = "Base model unavailable"
    slug = "base-model-unavailable"
