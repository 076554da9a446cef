"""Exactness audits: `jobs.kind` may be `exactness_audit` (a job that retrains shards into a
scratch store and compares the digests with the served layers)

SQLite recreates `jobs` to change its CHECK constraint; `migrations/env.py` turns foreign keys
off for it (other tables reference `jobs` with ON DELETE actions) and checks them afterwards.

Revision ID: e8a0b2c4d6f8
Revises: d7f9a1b3c5e7
Create Date: 2026-11-28 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e8a0b2c4d6f8"
down_revision: str | None = "d7f9a1b3c5e7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = ("train", "retrain", "approximate")
AFTER = (*BEFORE, "exactness_audit")


def _allow(kinds: Sequence[str]) -> None:
    values = ", ".join(repr(k) for k in kinds)
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint("jobkind", type_="check")
        batch_op.create_check_constraint("jobkind", f"kind IN ({values})")


def upgrade() -> None:
    _allow(AFTER)


def downgrade() -> None:
    jobs = sa.table("jobs", sa.column("kind", sa.String))
    op.execute(jobs.delete().where(jobs.c.kind.not_in(BEFORE)))
    _allow(BEFORE)
