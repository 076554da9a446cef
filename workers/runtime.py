"""Per-process state of a worker: the database, the S3T engine and the outbox publisher,
created on first use.

Created lazily inside the task, never at import time, so a prefork worker builds its engine
(and any CUDA state) in the child process after the fork.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from functools import cache

from sqlalchemy.orm import Session, sessionmaker

from service.artifacts.collection import collect, collected_among
from service.db.engine import make_engine, make_session_factory, unit_of_work
from service.engine import build_engine
from service.jobs.runner import JobOutcome
from service.serving.notify import publish_change, publish_collected
from service.settings import get_settings
from unlearning.s3t import S3TEngine

log = logging.getLogger(__name__)


@cache
def session_factory() -> sessionmaker[Session]:
    settings = get_settings()
    engine = make_engine(
        settings.database_url, sqlite_busy_timeout_s=settings.sqlite_busy_timeout_s
    )
    return make_session_factory(engine)


def transaction() -> AbstractContextManager[Session]:
    """One committed transaction: the boundary of a task's step."""
    return unit_of_work(session_factory())


@cache
def s3t_engine() -> S3TEngine:
    return build_engine(get_settings())


def collect_artifacts() -> None:
    """After a job: delete the artifacts nothing live names any more (its activation superseded
    or discarded layers; a deletion it completed left its layers dead), drop collected stages
    from this worker's memory, and announce them so that API processes drop them too. A failure
    leaves them to the next job or the API's housekeeping: the database says what is left."""
    settings = get_settings()
    engine = s3t_engine()
    try:
        collected = collect(transaction, engine.store)
        with transaction() as session:
            engine.evict_stages(collected_among(session, engine.loaded_stages))
    except Exception:  # the job's outcome is recorded; collection is retried by the next pass
        log.exception("artifact collection after the job failed")
        return
    if collected and settings.pubsub_url:
        publish_collected(settings.pubsub_url, collected)


def announce(outcome: JobOutcome | None) -> None:
    """Tell the API processes (Redis pub/sub, when configured) that a job served new layers."""
    settings = get_settings()
    if outcome is not None and outcome.activation.activated_layer_ids and settings.pubsub_url:
        publish_change(settings.pubsub_url, outcome.model_id, outcome.serving_generation)
