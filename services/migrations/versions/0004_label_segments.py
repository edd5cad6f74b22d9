"""label_segments: runs of consecutive windows sharing a label, for moment search

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "label_segments",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("video_id", sa.Uuid(), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("model_version", sa.String(length=200), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("label_index", sa.Integer(), nullable=False),
        sa.Column("start_ms", sa.BigInteger(), nullable=False),
        sa.Column("end_ms", sa.BigInteger(), nullable=False),
        sa.Column("windows", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("mean_score", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["video_id"], ["videos.id"], name=op.f("fk_label_segments_video_id_videos"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_label_segments")),
        sa.UniqueConstraint(
            "video_id",
            "model_name",
            "model_version",
            "label",
            "start_ms",
            name=op.f("uq_label_segments_video_id"),
        ),
    )
    op.create_index("ix_label_segments_label_score_id", "label_segments", ["label", "score", "id"])
    op.create_index(op.f("ix_label_segments_video_id"), "label_segments", ["video_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_label_segments_video_id"), table_name="label_segments")
    op.drop_index("ix_label_segments_label_score_id", table_name="label_segments")
    op.drop_table("label_segments")
