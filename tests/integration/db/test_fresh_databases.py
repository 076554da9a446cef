"""The fixtures' promise: a test that commits gets a database of its own, migrated to head and
empty, whatever the tests before it wrote (a copy of the template, never the template)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.script import ScriptDirectory

from service.db.engine import make_engine
from service.db.migrate import alembic_config
from tests.conftest import FreshDatabase


def _tenants_and_revision(url: str) -> tuple[int, str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            tenants = conn.execute(sa.text("SELECT count(*) FROM tenants")).scalar_one()
            revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    finally:
        engine.dispose()
    return tenants, revision


def test_each_copy_is_migrated_and_empty(fresh_db: FreshDatabase) -> None:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    first = fresh_db.url()
    engine = make_engine(first)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO tenants (id, name, created_at) VALUES (:id, 'one', :now)"),
            {"id": "00000000-0000-0000-0000-000000000001", "now": "2026-11-28 00:00:00"},
        )
    engine.dispose()
    assert _tenants_and_revision(first) == (1, head)

    second = fresh_db.url()
    assert _tenants_and_revision(second) == (0, head)  # nothing of the first test's rows
    assert second != first
