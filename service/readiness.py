"""Readiness probes of the service's dependencies, each bounded in time."""

from __future__ import annotations

import sqlalchemy as sa
from kombu import Connection


def check_database(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


def check_broker(url: str, timeout_s: float) -> None:
    with Connection(url, connect_timeout=timeout_s, transport_options={"max_retries": 0}) as conn:
        conn.ensure_connection(max_retries=1, timeout=max(1, round(timeout_s)))
