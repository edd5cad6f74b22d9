"""Database tables (SQLAlchemy 2, typed). The job row is the truth about what exists."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names so migrations are the same on Postgres and SQLite.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


# What embedded mode, the CLI and rows from before tenants belong to (migration 0009 creates it).
DEFAULT_TENANT_ID = uuid.UUID(int=0)


class Tenant(Base):
    """A team sharing the deployment: it owns keys, videos, jobs, backfills and their results."""

    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # Signs this tenant's webhooks (whsec_...); None: the deployment's TSMINDEX_WEBHOOK_SECRET.
    webhook_secret: Mapped[str | None] = mapped_column(String(200))
    # S3 locations it may read or write ("bucket/prefix*" patterns); None: the settings' default.
    s3_allow: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True, default=DEFAULT_TENANT_ID
    )
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))  # shown to people; the key itself is never stored
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=lambda: ["read", "write", "backfill"])
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Revoked from this instant (a rotation's grace period puts it in the future).
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    replaced_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))


def _tenant_column() -> Mapped[uuid.UUID]:
    return mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True, default=DEFAULT_TENANT_ID)


class Video(Base):
    __tablename__ = "videos"
    # Content is deduplicated per tenant: the same bytes from two tenants are two videos.
    __table_args__ = (
        UniqueConstraint("tenant_id", "sha256", name="uq_videos_tenant_id_sha256"),
        UniqueConstraint("tenant_id", "source_uri", name="uq_videos_tenant_id_source_uri"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = _tenant_column()
    # Unknown for an S3 source until a worker has read it.
    sha256: Mapped[str | None] = mapped_column(String(64))
    storage_key: Mapped[str | None] = mapped_column(String(1024))  # our copy of uploaded bytes
    source_uri: Mapped[str | None] = mapped_column(String(2048))  # s3:// or file://
    # The ETag of the S3 object's version last indexed: a submission that finds another one re-indexes.
    source_etag: Mapped[str | None] = mapped_column(String(200))
    filename: Mapped[str | None] = mapped_column(String(1024))
    content_type: Mapped[str | None] = mapped_column(String(200))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    duration_s: Mapped[float | None] = mapped_column(Float)
    fps: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    codec: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Backfill(Base):
    __tablename__ = "backfills"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = _tenant_column()
    source_uri: Mapped[str] = mapped_column(String(2048))  # s3://bucket/prefix
    status: Mapped[str] = mapped_column(String(16), default="running")
    objects_listed: Mapped[int] = mapped_column(BigInteger, default=0)
    jobs_created: Mapped[int] = mapped_column(BigInteger, default=0)  # jobs this backfill enqueued
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Backfill runs (services/core/backfills/): what is listed, the resumable cursor, the counts.
    bucket: Mapped[str] = mapped_column(String(255), default="")
    prefix: Mapped[str] = mapped_column(String(1024), default="")
    model_name: Mapped[str] = mapped_column(String(200), default="")
    model_version: Mapped[str] = mapped_column(String(200), default="")
    filters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # index options of every job
    cursor_key: Mapped[str | None] = mapped_column(String(1024))  # last key whose outcome is stored
    objects_skipped: Mapped[int] = mapped_column(BigInteger, default=0)
    jobs_succeeded: Mapped[int] = mapped_column(BigInteger, default=0)  # frozen when it ends
    jobs_failed: Mapped[int] = mapped_column(BigInteger, default=0)
    reason: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    listed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    output_uri: Mapped[str | None] = mapped_column(String(2048))  # s3:// prefix for JSON Lines results
    exported_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # "s3": a prefix's objects; "reindex": indexed videos (``filters`` select them) to another version.
    kind: Mapped[str] = mapped_column(String(16), default="s3", server_default="s3")


class SourceObject(Base):
    """One S3 object version seen by a backfill, and the job that indexes it for one model version.

    The unique key (bucket, key, ETag, model) is what makes re-runs and overlapping prefixes
    enqueue nothing twice; a changed object has a new ETag and is indexed again."""

    __tablename__ = "source_objects"
    __table_args__ = (UniqueConstraint("tenant_id", "bucket", "key", "etag", "model_name", "model_version"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = _tenant_column()
    bucket: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(String(1024))
    etag: Mapped[str] = mapped_column(String(200))
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(200))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    last_modified: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    backfill_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("backfills.id", ondelete="SET NULL"), index=True
    )
    outcome: Mapped[str] = mapped_column(String(16))  # "queued" by this backfill, or "adopted"
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # One index per video and model version: the dedupe key.
        UniqueConstraint("video_id", "model_name", "model_version"),
        # Job listing, newest first, with or without a status (keyset pages on created_at, id).
        Index("ix_jobs_status_created_at_id", "status", "created_at", "id"),
        Index("ix_jobs_created_at_id", "created_at", "id"),
        # The reaper: queued jobs by when they were last sent, running ones by lease expiry.
        Index("ix_jobs_status_sent_at", "status", "sent_at"),
        Index("ix_jobs_status_lease_expires_at", "status", "lease_expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = _tenant_column()  # always its video's
    video_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued)
    reason: Mapped[str | None] = mapped_column(String(64))  # machine code of a failure
    detail: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    backfill_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("backfills.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Lifecycle (services/core/indexing/jobs.py): who runs the job and until when, when its last
    # wake-up message was sent, when a deferred job may run again and when it must give up.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deferrals: Mapped[int] = mapped_column(Integer, default=0)
    # How the frames were sampled, and the frames that failed to decode (replaced by neighbours).
    sampling: Mapped[str | None] = mapped_column(String(16))
    shortfall_frames: Mapped[int | None] = mapped_column(Integer)
    shortfall_windows: Mapped[list[int] | None] = mapped_column(JSON)
    decode_fallback: Mapped[bool | None] = mapped_column(Boolean)

    # Coverage of the last run: seconds inside a window, and whether a window cap stopped it early.
    covered_s: Mapped[float | None] = mapped_column(Float)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class WebhookDelivery(Base):
    """The outbox: one webhook per job outcome, written with the outcome, delivered after commit
    (and retried by the reaper), so a worker dying after the commit loses no notification."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("job_id", "outcome"),
        Index("ix_webhook_deliveries_delivered_at_next_attempt_at", "delivered_at", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    outcome: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(String(2048))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    gave_up_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    api_key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    # The request the key was first used with: the same key with another request is refused.
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class _LabelRow:
    """Columns every label row has: which video, which model, which label, how it scored."""

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    video_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(200))
    label: Mapped[str] = mapped_column(String(200))
    label_index: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)


class VideoLabel(_LabelRow, Base):
    """Video-level label: ``score`` is the mean of the window probabilities, ``peak_score`` the best
    window's (at ``peak_window``). Every label some window kept has a row; ``rank`` orders by mean."""

    __tablename__ = "video_labels"
    __table_args__ = (
        UniqueConstraint("video_id", "model_name", "model_version", "label"),
        # Search: WHERE label = ? AND score >= ? ORDER BY score DESC, id (keyset pages), by mean or peak.
        Index("ix_video_labels_label_score_id", "label", "score", "id"),
        Index("ix_video_labels_label_peak_score_id", "label", "peak_score", "id"),
    )

    rank: Mapped[int] = mapped_column(Integer)
    peak_score: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    peak_window: Mapped[int | None] = mapped_column(Integer)


class WindowLabel(_LabelRow, Base):
    """Top labels of one time window of a video."""

    __tablename__ = "window_labels"
    __table_args__ = (
        UniqueConstraint("video_id", "model_name", "model_version", "window_index", "label"),
        Index("ix_window_labels_label_score", "label", "score"),
    )

    window_index: Mapped[int] = mapped_column(Integer)
    start_ms: Mapped[int] = mapped_column(BigInteger)
    end_ms: Mapped[int] = mapped_column(BigInteger)
    rank: Mapped[int] = mapped_column(Integer)


class LabelSegment(_LabelRow, Base):
    """Where a label happens: a run of consecutive windows that each have it among their top labels.

    ``score`` is the run's best window score (what moment search ranks by), ``mean_score`` the mean
    over its windows."""

    __tablename__ = "label_segments"
    __table_args__ = (
        UniqueConstraint("video_id", "model_name", "model_version", "label", "start_ms"),
        # Moment search: WHERE label = ? AND score >= ? ORDER BY score DESC, id (keyset pages).
        Index("ix_label_segments_label_score_id", "label", "score", "id"),
    )

    start_ms: Mapped[int] = mapped_column(BigInteger)
    end_ms: Mapped[int] = mapped_column(BigInteger)
    windows: Mapped[int] = mapped_column(Integer)
    mean_score: Mapped[float] = mapped_column(Float)
    peak_window: Mapped[int | None] = mapped_column(Integer)  # the best window: its thumbnail


class IndexedWindow(Base):
    """One window of a video as one model version saw it: its span, its top labels (index, score)
    pairs up to ``window_top_k``, so another threshold needs no re-decoding), its thumbnail, and
    its clip embedding. The embedding column is not mapped: its type depends on the database
    (pgvector ``halfvec`` or fp16 bytes), so ``services.core.vectors`` alone reads and writes it."""

    __tablename__ = "indexed_windows"
    __table_args__ = (UniqueConstraint("video_id", "model_name", "model_version", "window_index"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    video_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(200))
    window_index: Mapped[int] = mapped_column(Integer)
    start_ms: Mapped[int] = mapped_column(BigInteger)
    end_ms: Mapped[int] = mapped_column(BigInteger)
    top_labels: Mapped[list[list[float]]] = mapped_column(JSON, default=list)  # [[index, score], ...]
    thumbnail_key: Mapped[str | None] = mapped_column(String(1024))
    dims: Mapped[int | None] = mapped_column(Integer)  # embedding length; None: no embedding


LabelTable = TypeVar("LabelTable", VideoLabel, WindowLabel, LabelSegment)


def label_rows(
    table: type[LabelTable], video_ids: Sequence[uuid.UUID], model_name: str, model_version: str
) -> Select[tuple[LabelTable]]:
    """The rows of ``table`` one model version wrote for these videos, in the order each table is read:
    labels by rank, windows by time then rank, segments by start then best score."""
    order: dict[type[Any], tuple[Any, ...]] = {
        VideoLabel: (VideoLabel.rank,),
        WindowLabel: (WindowLabel.window_index, WindowLabel.rank),
        LabelSegment: (LabelSegment.start_ms, LabelSegment.score.desc(), LabelSegment.label),
    }
    return (
        select(table)
        .where(
            table.video_id.in_(video_ids),
            table.model_name == model_name,
            table.model_version == model_version,
        )
        .order_by(*order[table])
    )


class ServedModel(Base):
    """A model version that a model server serves, written when the server starts.

    Submissions (API, CLI, backfills, reindex) key their jobs by these rows, never by the submitting
    process's own settings; workers cut clips the way the row says."""

    __tablename__ = "served_models"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[str] = mapped_column(String(200), primary_key=True)
    # The version a request that names no model (or only the name) gets: the newest default one.
    is_default: Mapped[bool] = mapped_column(Boolean, default=True)
    server: Mapped[str] = mapped_column(String(32))  # "torchserve" or "inprocess" (a worker)
    num_segments: Mapped[int] = mapped_column(Integer)
    clip_resize: Mapped[int] = mapped_column(Integer)
    clip_crop: Mapped[int] = mapped_column(Integer)
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
