"""served_models: the model versions the model servers serve, written when a server starts;
backfills.kind: a backfill of an S3 prefix, or a reindex of indexed videos to another version

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 18:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "served_models",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(200), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("server", sa.String(32), nullable=False),
        sa.Column("num_segments", sa.Integer(), nullable=False),
        sa.Column("clip_resize", sa.Integer(), nullable=False),
        sa.Column("clip_crop", sa.Integer(), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", "version", name=op.f("pk_served_models")),
    )
    with op.batch_alter_table("backfills") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="s3"))


def downgrade() -> None:
    with op.batch_alter_table("backfills") as batch:
        batch.drop_column("kind")
    op.drop_table("served_models")
