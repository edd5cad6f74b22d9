"""backfills: optional JSON Lines export of results to an S3 output prefix

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 11:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("backfills") as batch:
        batch.add_column(sa.Column("output_uri", sa.String(length=2048), nullable=True))
        batch.add_column(sa.Column("exported_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("backfills") as batch:
        batch.drop_column("exported_at")
        batch.drop_column("output_uri")
