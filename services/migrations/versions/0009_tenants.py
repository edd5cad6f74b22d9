"""tenants: keys, videos, jobs, backfills and source objects belong to one; scoped, expiring keys

Rows from before tenants (and embedded mode's) belong to the "default" tenant, id all zeros.
Content is deduplicated per tenant: the unique keys of videos and source objects gain tenant_id.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 19:00:00
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_TENANT_ID = uuid.UUID(int=0)
OWNED = ("videos", "jobs", "backfills", "source_objects", "api_keys")


def upgrade() -> None:
    tenants = op.create_table(
        "tenants",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("webhook_secret", sa.String(length=200), nullable=True),
        sa.Column("s3_allow", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("name", name=op.f("uq_tenants_name")),
    )
    op.bulk_insert(tenants, [{"id": DEFAULT_TENANT_ID, "name": "default", "created_at": datetime.now(UTC)}])
    for table in OWNED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("tenant_id", sa.Uuid(), nullable=True))
        op.execute(sa.text(f"UPDATE {table} SET tenant_id = :t").bindparams(t=DEFAULT_TENANT_ID))
        with op.batch_alter_table(table) as batch:
            batch.alter_column("tenant_id", existing_type=sa.Uuid(), nullable=False)
            batch.create_foreign_key(
                op.f(f"fk_{table}_tenant_id_tenants"), "tenants", ["tenant_id"], ["id"], ondelete="CASCADE"
            )
            batch.create_index(op.f(f"ix_{table}_tenant_id"), ["tenant_id"], unique=False)
    with op.batch_alter_table("videos") as batch:
        batch.drop_constraint("uq_videos_sha256", type_="unique")
        batch.drop_constraint("uq_videos_source_uri", type_="unique")
        batch.create_unique_constraint("uq_videos_tenant_id_sha256", ["tenant_id", "sha256"])
        batch.create_unique_constraint("uq_videos_tenant_id_source_uri", ["tenant_id", "source_uri"])
    with op.batch_alter_table("source_objects") as batch:
        batch.drop_constraint("uq_source_objects_bucket", type_="unique")
        batch.create_unique_constraint(
            op.f("uq_source_objects_tenant_id"),
            ["tenant_id", "bucket", "key", "etag", "model_name", "model_version"],
        )
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("scopes", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("replaced_by", sa.Uuid(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_api_keys_replaced_by_api_keys"), "api_keys", ["replaced_by"], ["id"], ondelete="SET NULL"
        )
    # Keys from before scopes could do everything but administer.
    op.execute(sa.text("""UPDATE api_keys SET scopes = '["read", "write", "backfill"]'"""))
    with op.batch_alter_table("api_keys") as batch:
        batch.alter_column("scopes", existing_type=sa.JSON(), nullable=False)
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("fingerprint", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("fingerprint")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint("fk_api_keys_replaced_by_api_keys", type_="foreignkey")
        batch.drop_column("replaced_by")
        batch.drop_column("expires_at")
        batch.drop_column("scopes")
    with op.batch_alter_table("videos") as batch:
        batch.drop_constraint("uq_videos_tenant_id_source_uri", type_="unique")
        batch.drop_constraint("uq_videos_tenant_id_sha256", type_="unique")
        batch.create_unique_constraint("uq_videos_sha256", ["sha256"])
        batch.create_unique_constraint("uq_videos_source_uri", ["source_uri"])
    with op.batch_alter_table("source_objects") as batch:
        batch.drop_constraint("uq_source_objects_tenant_id", type_="unique")
        batch.create_unique_constraint(
            "uq_source_objects_bucket", ["bucket", "key", "etag", "model_name", "model_version"]
        )
    for table in OWNED:
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_tenant_id")
            batch.drop_constraint(f"fk_{table}_tenant_id_tenants", type_="foreignkey")
            batch.drop_column("tenant_id")
    op.drop_table("tenants")
