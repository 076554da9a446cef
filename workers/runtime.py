"""Per-process state of a worker: the database, the S3T engines (one per base model, an LRU
bounded by ``UNLEARN_BASE_MODEL_CACHE_MB``) and the outbox publisher, created on first use.

Created lazily inside the task, never at import time, so a prefork worker builds its engines
(and any CUDA state) in the child process after the fork.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from functools import cache

from sqlalchemy.orm import Session, sessionmaker

from service.artifacts.collection import collect, collected_among
from service.db.engine import make_engine, make_session_factory, unit_of_work
from service.engine import EngineCatalogue
from service.jobs.runner import JobOutcome
from service.serving.notify import publish_change, publish_collected
from service.settings import get_settings

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
def engines() -> EngineCatalogue:
    """This process's engines: each job loads (or reuses) its model's base model."""
    return EngineCatalogue(get_settings())


def collect_artifacts() -> None:
    """After a job: delete the artifacts nothing live names any more (its activation superseded
    or discarded layers; a deletion it completed left its layers dead), drop collected stages
    from this worker's memory, and announce them so that API processes drop them too. A failure
    leaves them to the next job or the API's housekeeping: the database says what is left."""
    settings = get_settings()
    catalogue = engines()
    try:
        collected = collect(transaction, catalogue.store)
        with transaction() as session:
            for engine in catalogue.engines():
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
