"""peak scores, job coverage, and one row per indexed window (top labels, thumbnail, embedding)

The embedding column is pgvector's ``halfvec`` where the extension can be created (HNSW indexes,
one per embedding length, are created on first use by ``services.core.vectors``), else fp16 bytes
searched exactly (SQLite, or a PostgreSQL without pgvector).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 18:40:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _pgvector(bind: sa.Connection) -> bool:
    """Create the extension where the server has it; False where it has not or we may not."""
    if bind.dialect.name != "postgresql":
        return False
    available = bind.scalar(sa.text("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'"))
    if not available:
        return False
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
    except sa.exc.DBAPIError:
        return False  # no privilege to create it: exact search over bytes instead
    return True


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("covered_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("truncated", sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table("video_labels") as batch:
        batch.add_column(sa.Column("peak_score", sa.Float(), server_default="0", nullable=False))
        batch.add_column(sa.Column("peak_window", sa.Integer(), nullable=True))
    # Rows written before peaks existed: the mean is the best we know.
    op.execute("UPDATE video_labels SET peak_score = score")
    op.create_index("ix_video_labels_label_peak_score_id", "video_labels", ["label", "peak_score", "id"])
    with op.batch_alter_table("label_segments") as batch:
        batch.add_column(sa.Column("peak_window", sa.Integer(), nullable=True))

    embedding: sa.types.TypeEngine[Any] = sa.LargeBinary()
    if _pgvector(bind):
        from sqlalchemy.types import UserDefinedType

        class HalfVec(UserDefinedType[Any]):
            cache_ok = True

            def get_col_spec(self, **_kw: object) -> str:
                return "halfvec"

        embedding = HalfVec()
    op.create_table(
        "indexed_windows",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("video_id", sa.Uuid(), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("model_version", sa.String(length=200), nullable=False),
        sa.Column("window_index", sa.Integer(), nullable=False),
        sa.Column("start_ms", sa.BigInteger(), nullable=False),
        sa.Column("end_ms", sa.BigInteger(), nullable=False),
        sa.Column("top_labels", sa.JSON(), nullable=False),
        sa.Column("thumbnail_key", sa.String(length=1024), nullable=True),
        sa.Column("dims", sa.Integer(), nullable=True),
        sa.Column("embedding", embedding, nullable=True),
        sa.ForeignKeyConstraint(
            ["video_id"], ["videos.id"], name=op.f("fk_indexed_windows_video_id_videos"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_indexed_windows")),
        sa.UniqueConstraint(
            "video_id",
            "model_name",
            "model_version",
            "window_index",
            name=op.f("uq_indexed_windows_video_id"),
        ),
    )
    op.create_index(op.f("ix_indexed_windows_video_id"), "indexed_windows", ["video_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_indexed_windows_video_id"), table_name="indexed_windows")
    op.drop_table("indexed_windows")
    with op.batch_alter_table("label_segments") as batch:
        batch.drop_column("peak_window")
    op.drop_index("ix_video_labels_label_peak_score_id", table_name="video_labels")
    with op.batch_alter_table("video_labels") as batch:
        batch.drop_column("peak_window")
        batch.drop_column("peak_score")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("truncated")
        batch.drop_column("covered_s")
