"""Readiness probes of the service's dependencies, each bounded in time."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from kombu import Connection

from service.settings import Settings, parse_s3_url
from unlearning.object_store import S3ArtifactStore


def check_database(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


def check_broker(url: str, timeout_s: float) -> None:
    with Connection(url, connect_timeout=timeout_s, transport_options={"max_retries": 0}) as conn:
        conn.ensure_connection(max_retries=1, timeout=max(1, round(timeout_s)))


def artifacts_probe(settings: Settings) -> Callable[[], None] | None:
    """The object store's check: its bucket answers, on one try within the readiness budget (a
    wrong bucket, endpoint or credentials keep a process out of service). None for the local
    folder: nothing to reach."""
    if not settings.artifacts_url:
        return None
    bucket, prefix = parse_s3_url(settings.artifacts_url)
    store = S3ArtifactStore(
        bucket,
        prefix,
        endpoint_url=settings.s3_endpoint_url or None,
        region=settings.s3_region,
        max_attempts=1,
        connect_timeout_s=settings.readiness_timeout_s,
        read_timeout_s=settings.readiness_timeout_s,
    )
    return store.check
