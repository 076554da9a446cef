"""``/metrics``: Prometheus text exposition (optionally behind ``UNLEARN_METRICS_TOKEN``)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import SettingsDep
from service.errors import UnauthenticatedError

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
def metrics(request: Request, settings: SettingsDep) -> Response:
    """Deletions by status and phase times, queue depth, retrain times, layers per model,
    predictions and HTTP latency. The lineage figures are read from the database."""
    if settings.metrics_token is not None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        expected = settings.metrics_token.get_secret_value().encode()
        # bytes: a header may carry any octet, which compare_digest refuses in a str
        sent = token.strip().encode("utf-8", "replace")
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent, expected):
            raise UnauthenticatedError("send the metrics token as `Authorization: Bearer <token>`")
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
