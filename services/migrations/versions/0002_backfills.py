"""backfills: listing cursor, filters and counts; source objects keyed by ETag and model

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 11:15:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("backfills") as batch:
        batch.add_column(sa.Column("bucket", sa.String(length=255), nullable=False, server_default=""))
        batch.add_column(sa.Column("prefix", sa.String(length=1024), nullable=False, server_default=""))
        batch.add_column(sa.Column("model_name", sa.String(length=200), nullable=False, server_default=""))
        batch.add_column(sa.Column("model_version", sa.String(length=200), nullable=False, server_default=""))
        batch.add_column(sa.Column("filters", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch.add_column(sa.Column("options", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch.add_column(sa.Column("cursor_key", sa.String(length=1024), nullable=True))
        batch.add_column(sa.Column("objects_skipped", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("jobs_succeeded", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("jobs_failed", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("reason", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("detail", sa.Text(), nullable=True))
        batch.add_column(sa.Column("listed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "source_objects",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("bucket", sa.String(length=255), nullable=False),
        sa.Column("key", sa.String(length=1024), nullable=False),
        sa.Column("etag", sa.String(length=200), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("model_version", sa.String(length=200), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("last_modified", sa.DateTime(timezone=True), nullable=True),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("backfill_id", sa.Uuid(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["backfill_id"],
            ["backfills.id"],
            name=op.f("fk_source_objects_backfill_id_backfills"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_source_objects_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_source_objects")),
        sa.UniqueConstraint(
            "bucket", "key", "etag", "model_name", "model_version", name=op.f("uq_source_objects_bucket")
        ),
    )
    op.create_index(op.f("ix_source_objects_backfill_id"), "source_objects", ["backfill_id"], unique=False)
    op.create_index(op.f("ix_source_objects_job_id"), "source_objects", ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_source_objects_job_id"), table_name="source_objects")
    op.drop_index(op.f("ix_source_objects_backfill_id"), table_name="source_objects")
    op.drop_table("source_objects")
    with op.batch_alter_table("backfills") as batch:
        for column in (
            "updated_at",
            "listed_at",
            "detail",
            "reason",
            "jobs_failed",
            "jobs_succeeded",
            "objects_skipped",
            "cursor_key",
            "options",
            "filters",
            "model_version",
            "model_name",
            "prefix",
            "bucket",
        ):
            batch.drop_column(column)
