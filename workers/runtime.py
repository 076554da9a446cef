"""Per-process state of a worker: the database and the S3T engine, created on first use.

Created lazily inside the task, never at import time, so a prefork worker builds its engine
(and any CUDA state) in the child process after the fork.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import cache

from sqlalchemy.orm import Session, sessionmaker

from service.db.engine import make_engine, make_session_factory, unit_of_work
from service.settings import get_settings
from unlearning.artifacts import LocalArtifactStore
from unlearning.s3t import S3TEngine, load_backbone


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
    settings = get_settings()
    assert settings.artifacts_dir is not None  # filled by the settings validator
    return S3TEngine(
        load_backbone(settings.backbone_path), LocalArtifactStore(settings.artifacts_dir)
    )
