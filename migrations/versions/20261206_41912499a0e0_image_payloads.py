"""Image samples: `sample_payloads.image` (the encoded PNG or JPEG as sent) and its
`media_type`; a payload's input may now be an image

Existing payloads hold a text or features and no image, so both new columns start empty.

Revision ID: 41912499a0e0
Revises: e1a3c5b7d9f2
Create Date: 2026-12-06 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "41912499a0e0"
down_revision: str | None = "e1a3c5b7d9f2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sample_payloads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("image", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("media_type", sa.String(length=32), nullable=True))
        batch_op.drop_constraint(batch_op.f("ck_sample_payloads_has_input"), type_="check")
        batch_op.create_check_constraint(
            "has_input", "text IS NOT NULL OR features IS NOT NULL OR image IS NOT NULL"
        )
        batch_op.create_check_constraint(
            "image_has_media_type", "(image IS NULL) = (media_type IS NULL)"
        )


def downgrade() -> None:
    # An image payload has no place in the older schema: those samples lose their input, as
    # their model cannot train without the image support this revision brought.
    op.execute(sa.text("DELETE FROM sample_payloads WHERE image IS NOT NULL"))
    with op.batch_alter_table("sample_payloads", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("ck_sample_payloads_image_has_media_type"), type_="check"
        )
        batch_op.drop_constraint(batch_op.f("ck_sample_payloads_has_input"), type_="check")
        batch_op.create_check_constraint("has_input", "text IS NOT NULL OR features IS NOT NULL")
    with op.batch_alter_table("sample_payloads", schema=None) as batch_op:
        batch_op.drop_column("media_type")
        batch_op.drop_column("image")
