"""Exactness audits: `jobs.kind` may be `exactness_audit` (a job that retrains shards into a
scratch store and compares the digests with the served layers)

SQLite recreates `jobs` to change its CHECK constraint. Other tables reference `jobs` with ON
DELETE actions, and with foreign keys on, dropping the old table would run them (links to
deletions deleted, `layers.job_id` cleared); so foreign keys are off for the recreate, as
SQLite's own procedure for schema changes says, and checked before they are turned back on.

Revision ID: e8a0b2c4d6f8
Revises: b5c7d9e1f3a4
Create Date: 2026-11-28 16:00:00.000000
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision: str = "e8a0b2c4d6f8"
down_revision: str | None = "b5c7d9e1f3a4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = ("train", "retrain", "approximate")
AFTER = (*BEFORE, "exactness_audit")


@contextmanager
def _sqlite_foreign_keys_off() -> Iterator[None]:
    """On SQLite: end the transaction, turn foreign keys off (a no-op inside a transaction),
    run the body in a new one, check every reference, then turn them back on."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        yield
        return
    bind.exec_driver_sql("COMMIT")
    bind.exec_driver_sql("PRAGMA foreign_keys = OFF")
    bind.exec_driver_sql("BEGIN IMMEDIATE")
    try:
        yield
        broken = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"recreating `jobs` broke references: {broken[:5]}")
        bind.exec_driver_sql("COMMIT")
    except BaseException:
        bind.exec_driver_sql("ROLLBACK")
        raise
    finally:
        bind.exec_driver_sql("PRAGMA foreign_keys = ON")
        bind.exec_driver_sql("BEGIN IMMEDIATE")


def _allow(kinds: Sequence[str]) -> None:
    values = ", ".join(repr(k) for k in kinds)
    with _sqlite_foreign_keys_off(), op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint("jobkind", type_="check")
        batch_op.create_check_constraint("jobkind", f"kind IN ({values})")


def upgrade() -> None:
    _allow(AFTER)


def downgrade() -> None:
    jobs = sa.table("jobs", sa.column("kind", sa.String))
    op.execute(jobs.delete().where(jobs.c.kind.not_in(BEFORE)))
    _allow(BEFORE)
