"""window_labels: a (label, score, id) index for moment search's keyset pages

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_window_labels_label_score_id", "window_labels", ["label", "score", "id"])
    op.drop_index("ix_window_labels_label_score", table_name="window_labels")


def downgrade() -> None:
    op.create_index("ix_window_labels_label_score", "window_labels", ["label", "score"])
    op.drop_index("ix_window_labels_label_score_id", table_name="window_labels")
