"""The schema exists only through Alembic, and the migrations match the models both ways."""

from __future__ import annotations

import sqlalchemy as sa

from service.db import migrate
from service.db.models import Base
from tests.conftest import FreshDatabase


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_check_downgrade_upgrade(fresh_db: FreshDatabase) -> None:
    url = fresh_db.url()
    migrate.upgrade(url)
    assert _tables(url) == set(Base.metadata.tables) | {"alembic_version"}
    migrate.check(url)  # raises if the models and the migrated schema differ

    migrate.downgrade(url, "base")
    assert _tables(url) == {"alembic_version"}

    migrate.upgrade(url)
    migrate.check(url)
