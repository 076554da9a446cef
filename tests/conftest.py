"""Shared fixtures: the lineage database on SQLite (always) and PostgreSQL (when reachable).

PostgreSQL is the server of ``UNLEARN_TEST_DATABASE_URL`` (default: the machine's server, as
``postgres``, who may create databases). Alembic runs once per backend and test process, into a
template; tests that commit get a copy of it (:class:`FreshDatabase`), the others a transaction
on one migrated database that is rolled back. With ``CI=true``, or when the variable is set
explicitly, an unreachable server fails the run instead of skipping.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch
from sqlalchemy.orm import Session, sessionmaker

from service.db import migrate
from service.db.engine import make_engine, make_session_factory
from service.db.models import Model, Task, Tenant
from service.db.repositories import ModelRepository, TenantRepository
from unlearning.device import local_profile

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ["sqlite", "postgresql"]


def pytest_configure(config: pytest.Config) -> None:
    """Under xdist, each worker's torch (and the processes it starts) gets its share of the
    cores: torch's default of one thread per core in every worker slows all of them down
    several times over."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in item.nodeid.replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)


def require_service(name: str, reason: str, *, explicit: bool = False) -> None:
    """Fail under CI (or when the service was asked for explicitly), skip elsewhere."""
    message = f"{name} unreachable: {reason}"
    if os.environ.get("CI", "").lower() == "true" or explicit:
        pytest.fail(message)
    pytest.skip(message)


def pg_server_url() -> str:
    return os.environ.get("UNLEARN_TEST_DATABASE_URL", DEFAULT_PG_URL)


def pg_connect_or_fail() -> sa.Engine:
    engine = sa.create_engine(
        pg_server_url(), connect_args={"connect_timeout": 3}, pool_pre_ping=True
    )
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        require_service(
            "PostgreSQL",
            str(exc).splitlines()[0],
            explicit="UNLEARN_TEST_DATABASE_URL" in os.environ,
        )
    return engine


def pg_database_url(name: str) -> str:
    return sa.make_url(pg_server_url()).set(database=name).render_as_string(hide_password=False)


class FreshDatabase:
    """Databases of one backend for tests that commit: copies of one migrated to head once.

    Alembic runs once per backend and test process, into a template: a SQLite file, or a
    PostgreSQL database. :meth:`url` hands out a copy of it (the SQLite backup API; PostgreSQL's
    ``CREATE DATABASE … TEMPLATE``, about 0.1 s); :meth:`empty_url` an empty database for the
    migration tests. The PostgreSQL databases are dropped at the end of the session.
    """

    def __init__(self, backend: str, tmp: Path) -> None:
        self.backend = backend
        self.tmp = tmp
        self._databases: list[str] = []
        self._admin = pg_connect_or_fail() if backend == "postgresql" else None
        self._template: str | None = None

    def empty_url(self) -> str:
        name = f"unlearn_test_{uuid.uuid4().hex[:12]}"
        if self._admin is None:
            return f"sqlite:///{self.tmp / name}.sqlite3"
        self._create(f'CREATE DATABASE "{name}"', name)
        return pg_database_url(name)

    def url(self) -> str:
        """A database of its own, migrated to head."""
        template = self._migrated_template()
        name = f"unlearn_test_{uuid.uuid4().hex[:12]}"
        if self._admin is None:
            target = self.tmp / f"{name}.sqlite3"
            with closing(sqlite3.connect(template)) as src, closing(sqlite3.connect(target)) as dst:
                src.backup(dst)
            return f"sqlite:///{target}"
        self._create(f'CREATE DATABASE "{name}" TEMPLATE "{template}"', name)
        return pg_database_url(name)

    def _migrated_template(self) -> str:
        """The template's file (SQLite) or database name (PostgreSQL), migrated on first use."""
        if self._template is None:
            url = self.empty_url()
            migrate.upgrade(url)  # disposes its engine: nobody is connected to a template
            self._template = str(sa.make_url(url).database)
        return self._template

    def _create(self, statement: str, name: str) -> None:
        assert self._admin is not None
        with self._admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(statement))
        self._databases.append(name)

    def close(self) -> None:
        if self._admin is None:
            return
        with self._admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for name in reversed(self._databases):  # the template last: copies came from it
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self._admin.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def fresh_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FreshDatabase]:
    factory = FreshDatabase(request.param, tmp_path_factory.mktemp(request.param))
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def db_engine(fresh_db: FreshDatabase) -> Iterator[sa.Engine]:
    """An engine on a database migrated to head once per test session and backend."""
    engine = make_engine(fresh_db.url())
    yield engine
    engine.dispose()


@pytest.fixture
def factory(fresh_db: FreshDatabase) -> Iterator[sessionmaker[Session]]:
    """Sessions on a database of their own whose transactions really commit."""
    engine = make_engine(fresh_db.url())
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def session(db_engine: sa.Engine) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test."""
    connection = db_engine.connect()
    transaction = connection.begin()
    db_session = Session(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    try:
        yield db_session
    finally:
        db_session.close()
        transaction.rollback()
        connection.close()


@pytest.fixture
def tenant(session: Session) -> Tenant:
    return TenantRepository.from_session(session).create(f"tenant-{uuid.uuid4().hex[:8]}")


def default_base_model_id(session: Session) -> uuid.UUID:
    """The deployment's default base model (the migrations register it), for models made here."""
    from service.base_models.service import ensure_default_base_model
    from service.settings import get_settings

    return ensure_default_base_model(session, get_settings()).id


def make_model(
    session: Session,
    tenant: Tenant,
    *,
    n_shards: int = 2,
    n_slices: int = 3,
    orders: list[list[int]] | None = None,
    task: Task = Task.classification,
) -> Model:
    orders = orders or [[(i + k) % n_slices for i in range(n_slices)] for k in range(n_slices)]
    return ModelRepository.from_session(session).create(
        tenant_id=tenant.id,
        name="m",
        task=task,
        n_shards=n_shards,
        n_slices=n_slices,
        budget=len(orders),
        sequence_orders=orders,
        compute_profile=local_profile("cpu"),
        base_model_id=default_base_model_id(session),
        labels=["neg", "pos"] if task is Task.classification else None,
    )


@pytest.fixture
def model(session: Session, tenant: Tenant) -> Model:
    return make_model(session, tenant)
