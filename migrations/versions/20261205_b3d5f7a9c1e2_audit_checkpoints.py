"""Audit reads that do not grow with history: a verified-up-to checkpoint per chain
(`audit_checkpoints`, with the last full verification's result) and what each entry is about
(`audit_refs`, so that a certificate finds its entries by index) and an index on the log's
chain and action; both tables filled for the entries already there (checkpoints at the start: the first read or full verification covers the rest)

Revision ID: b3d5f7a9c1e2
Revises: a2c4e6f8b0d1
Create Date: 2026-12-05 15:00:00.000000
"""

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "b3d5f7a9c1e2"
down_revision: str | None = "a2c4e6f8b0d1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS_HASH = "0" * 64
BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _refs(payload: dict[str, Any]) -> set[str]:
    """As ``service.db.repositories.audit.entry_refs`` says today (frozen here)."""
    refs = set()
    if isinstance(deletion := payload.get("deletion_id"), str):
        refs.add(f"deletion:{deletion}")
    for deletion in payload.get("deletion_ids") or ():
        if isinstance(deletion, str):
            refs.add(f"deletion:{deletion}")
    if isinstance(job := payload.get("job_id"), str):
        refs.add(f"job:{job}")
    return refs


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("chain", sa.String(length=64), nullable=False),
        sa.Column("verified_seq", sa.Integer(), nullable=False),
        sa.Column("verified_hash", sa.String(length=64), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("broken_seq", sa.Integer(), nullable=True),
        sa.Column("broken_reason", sa.String(length=200), nullable=True),
        sa.Column("full_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("full_through_seq", sa.Integer(), nullable=True),
        sa.Column("full_ok", sa.Boolean(), nullable=True),
        sa.Column("full_first_bad_seq", sa.Integer(), nullable=True),
        sa.Column("full_reason", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("chain", name=op.f("pk_audit_checkpoints")),
    )
    with op.batch_alter_table("audit_checkpoints", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_checkpoints_full_at"), ["full_at"], unique=False)
    op.create_table(
        "audit_refs",
        sa.Column("ref", sa.String(length=80), nullable=False),
        sa.Column("entry_id", BIGINT, nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["audit_log.id"], name=op.f("fk_audit_refs_entry_id_audit_log")
        ),
        sa.PrimaryKeyConstraint("ref", "entry_id", name=op.f("pk_audit_refs")),
    )

    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("ix_audit_log_chain_action", ["chain", "action"], unique=False)

    bind = op.get_bind()
    op.execute(
        sa.text(
            "INSERT INTO audit_checkpoints (chain, verified_seq, verified_hash) "
            "SELECT DISTINCT chain, 0, :genesis FROM audit_log"
        ).bindparams(genesis=GENESIS_HASH)
    )
    refs = sa.table("audit_refs", sa.column("ref", sa.String), sa.column("entry_id", BIGINT))
    rows = bind.execute(sa.text("SELECT id, payload FROM audit_log ORDER BY id"))
    batch: list[dict[str, Any]] = []
    for entry_id, payload in rows:
        document = json.loads(payload) if isinstance(payload, str) else payload
        batch.extend({"ref": ref, "entry_id": entry_id} for ref in _refs(document or {}))
    if batch:
        op.bulk_insert(refs, batch)


def downgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_log_chain_action")
    op.drop_table("audit_refs")
    with op.batch_alter_table("audit_checkpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_checkpoints_full_at"))
    op.drop_table("audit_checkpoints")
