"""Structured logs: one JSON object per line, carrying the request or job it belongs to.

Records never hold sample text: the service logs ids, counts and timings only, and a record's
``extra`` fields are written as they are, so callers pass identifiers, never payloads.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("job_id", default=None)

#: The attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in (("request_id", request_id), ("job_id", job_id)):
            value = getattr(record, key, None) or var.get()
            if value is not None:
                entry[key] = value
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class ContextFilter(logging.Filter):
    """Adds the request and job ids to text logs too (`request_id=... job_id=...`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = [f"{k}={v.get()}" for k, v in (("request", request_id), ("job", job_id)) if v.get()]
        record.context = f" [{' '.join(ids)}]" if ids else ""
        return True


def configure(level: str, fmt: str) -> None:
    """Route every logger (uvicorn's and celery's included) to one stderr handler."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.addFilter(ContextFilter())
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s%(context)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


@contextmanager
def job_context(job: str) -> Iterator[None]:
    """Within the block, every record carries ``job_id``."""
    token = job_id.set(job)
    try:
        yield
    finally:
        job_id.reset(token)
