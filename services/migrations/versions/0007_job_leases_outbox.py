"""jobs: leases, wake-up and retry times, sampling shortfall; webhook_deliveries (the outbox)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 18:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", TS, nullable=True))
        batch.add_column(sa.Column("sent_at", TS, nullable=True))
        batch.add_column(sa.Column("next_attempt_at", TS, nullable=True))
        batch.add_column(sa.Column("deadline_at", TS, nullable=True))
        batch.add_column(sa.Column("deferrals", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("sampling", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("shortfall_frames", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("shortfall_windows", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("decode_fallback", sa.Boolean(), nullable=True))
    # Jobs queued before this revision count as sent now: the reaper re-sends them if never taken.
    op.execute(sa.text("UPDATE jobs SET sent_at = CURRENT_TIMESTAMP WHERE status = 'queued'"))
    op.create_index("ix_jobs_status_sent_at", "jobs", ["status", "sent_at"])
    op.create_index("ix_jobs_status_lease_expires_at", "jobs", ["status", "lease_expires_at"])
    op.create_table(
        "webhook_deliveries",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TS, nullable=True),
        sa.Column("delivered_at", TS, nullable=True),
        sa.Column("gave_up_at", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_webhook_deliveries_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
        sa.UniqueConstraint("job_id", "outcome", name="uq_webhook_deliveries_job_id"),
    )
    op.create_index(
        "ix_webhook_deliveries_delivered_at_next_attempt_at",
        "webhook_deliveries",
        ["delivered_at", "next_attempt_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_delivered_at_next_attempt_at", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_jobs_status_lease_expires_at", table_name="jobs")
    op.drop_index("ix_jobs_status_sent_at", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for column in (
            "decode_fallback",
            "shortfall_windows",
            "shortfall_frames",
            "sampling",
            "deferrals",
            "deadline_at",
            "next_attempt_at",
            "sent_at",
            "lease_expires_at",
            "lease_owner",
        ):
            batch.drop_column(column)
