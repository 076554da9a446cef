"""The schema exists only through Alembic, and the migrations match the models both ways."""

from __future__ import annotations

import sqlalchemy as sa

from service.db import migrate
from service.db.engine import make_engine, make_session_factory, unit_of_work
from service.db.models import Base
from service.db.repositories import TenantRepository
from tests.conftest import FreshDatabase, make_model


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_check_downgrade_upgrade(fresh_db: FreshDatabase) -> None:
    url = fresh_db.empty_url()
    migrate.upgrade(url)
    assert _tables(url) == set(Base.metadata.tables) | {"alembic_version"}
    migrate.check(url)  # raises if the models and the migrated schema differ

    migrate.downgrade(url, "base")
    assert _tables(url) == {"alembic_version"}

    migrate.upgrade(url)
    migrate.check(url)


#: The first revision that recreates `models` on SQLite (batch mode) after shards refer to it.
BEFORE_MODELS_REBUILD = "a4b6c8d0e2f3"


def test_a_table_rebuild_keeps_the_rows_that_refer_to_it(fresh_db: FreshDatabase) -> None:
    """On SQLite, batch mode recreates `models` (and `jobs`) to change a CHECK constraint:
    with foreign keys on, dropping the old table cascaded into shards, slices and sequences.
    A model's rows survive a downgrade and upgrade through every such migration."""
    url = fresh_db.empty_url()
    migrate.upgrade(url)
    engine = make_engine(url)
    with unit_of_work(make_session_factory(engine)) as session:
        tenant = TenantRepository.from_session(session).create("t")
        make_model(session, tenant)
    before = _counts(engine)
    assert all(before.values()), before
    migrate.downgrade(url, BEFORE_MODELS_REBUILD)
    migrate.upgrade(url)
    assert _counts(engine) == before
    engine.dispose()


def _counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table: conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("models", "shards", "slices", "sequences")
        }
