"""Shared fixtures: the lineage database on SQLite (always) and PostgreSQL (when reachable).

PostgreSQL is the server of ``UNLEARN_TEST_DATABASE_URL`` (default: the machine's server,
database ``test``). Each test session migrates a fresh schema there with Alembic and drops it at
the end; each test runs in a transaction that is rolled back. With ``CI=true``, or when the
variable is set explicitly, an unreachable server fails the run instead of skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from service.db import migrate
from service.db.engine import make_engine, make_session_factory
from service.db.models import Model, Task, Tenant
from service.db.repositories import ModelRepository, TenantRepository
from unlearning.device import local_profile

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ["sqlite", "postgresql"]


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


def pg_schema_url(schema: str) -> str:
    url = sa.make_url(pg_server_url())
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )


class FreshDatabase:
    """Creates empty databases: SQLite files, or PostgreSQL schemas that are dropped later."""

    def __init__(self, backend: str, tmp: Path) -> None:
        self.backend = backend
        self.tmp = tmp
        self._schemas: list[str] = []
        self._admin = pg_connect_or_fail() if backend == "postgresql" else None

    def url(self) -> str:
        name = f"unlearn_test_{uuid.uuid4().hex[:12]}"
        if self._admin is None:
            return f"sqlite:///{self.tmp / name}.sqlite3"
        with self._admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
        self._schemas.append(name)
        return pg_schema_url(name)

    def close(self) -> None:
        if self._admin is None:
            return
        for name in self._schemas:  # one transaction each: a schema holds many locks
            with self._admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
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
    url = fresh_db.url()
    migrate.upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(fresh_db: FreshDatabase) -> Iterator[sessionmaker[Session]]:
    """Sessions on a database of their own whose transactions really commit."""
    url = fresh_db.url()
    migrate.upgrade(url)
    engine = make_engine(url)
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
        labels=["neg", "pos"] if task is Task.classification else None,
    )


@pytest.fixture
def model(session: Session, tenant: Tenant) -> Model:
    return make_model(session, tenant)
