"""A typed client for the unlearn service (``pip install -e ./client``).

>>> with UnlearnClient("http://localhost:8000", key) as api:
...     deletion = api.delete_subject(model_id, "user-07")
...     api.wait_for_deletion(deletion["id"])
...     certificate = api.get_certificate(deletion["id"])
"""

from unlearn_client.client import MAX_SAMPLES_PER_REQUEST, RETRY_STATUSES, UnlearnClient
from unlearn_client.errors import (
    ApiError,
    AuthenticationError,
    ConflictError,
    NetworkError,
    NotFoundError,
    OperationFailedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    UnlearnError,
    ValidationError,
    WaitTimeout,
    WebhookSignatureError,
)
from unlearn_client.models import (
    WEBHOOK_EVENT_TYPES,
    ApiKey,
    Certificate,
    Deletion,
    DeletionPage,
    DeletionVerification,
    Delivery,
    DeliveryAttempt,
    ExactnessAudit,
    IssuedKey,
    Job,
    LayerCheck,
    Model,
    ModelStatus,
    PredictResponse,
    SampleIn,
    SampleRowError,
    SamplesResult,
    TrainAccepted,
    Webhook,
    WebhookEvent,
    WebhookWithSecret,
)
from unlearn_client.webhooks import SIGNATURE_HEADER, sign_webhook, verify_webhook

__version__ = "0.1.0"

__all__ = [
    "MAX_SAMPLES_PER_REQUEST",
    "RETRY_STATUSES",
    "SIGNATURE_HEADER",
    "WEBHOOK_EVENT_TYPES",
    "ApiError",
    "ApiKey",
    "AuthenticationError",
    "Certificate",
    "ConflictError",
    "Deletion",
    "DeletionPage",
    "DeletionVerification",
    "Delivery",
    "DeliveryAttempt",
    "ExactnessAudit",
    "IssuedKey",
    "Job",
    "LayerCheck",
    "Model",
    "ModelStatus",
    "NetworkError",
    "NotFoundError",
    "OperationFailedError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PredictResponse",
    "RateLimitedError",
    "SampleIn",
    "SampleRowError",
    "SamplesResult",
    "ServerError",
    "TrainAccepted",
    "UnlearnClient",
    "UnlearnError",
    "ValidationError",
    "WaitTimeout",
    "Webhook",
    "WebhookEvent",
    "WebhookSignatureError",
    "WebhookWithSecret",
    "sign_webhook",
    "verify_webhook",
]
