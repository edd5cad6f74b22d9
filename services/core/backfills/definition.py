"""A backfill's definition: its statuses, the filters that pick objects, and creating one."""

from __future__ import annotations

import posixpath
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.core import served
from services.core.backfills.listing import ListedObject, as_utc
from services.core.config import Settings
from services.core.models import DEFAULT_TENANT_ID, Backfill
from services.core.versions import ModelVersion

VIDEO_EXTENSIONS = (
    "3gp", "avi", "flv", "m2ts", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "mts", "ogv", "ts", "webm", "wmv",
)  # fmt: skip
BATCH_OBJECTS = 200  # objects per transaction: bounds a transaction and the overshoot past the cap
FAILURE_SAMPLE = 100


class BackfillStatus(StrEnum):
    listing = "listing"
    indexing = "indexing"  # listing done; jobs still queued or running
    completed = "completed"
    cancelled = "cancelled"
    failed = "failed"  # the listing itself failed (no such bucket, access denied)


ACTIVE = (BackfillStatus.listing, BackfillStatus.indexing)


class BackfillKind(StrEnum):
    s3 = "s3"  # the objects under an S3 prefix
    reindex = "reindex"  # indexed videos (services.core.reindex) for another model version


class RunOutcome(StrEnum):
    listed = "listed"  # every object has a job or a reason to be skipped
    throttled = "throttled"  # the queue is at its cap; run again later (non-blocking runs)
    busy = "busy"  # another runner holds this backfill
    unavailable = "unavailable"  # S3, the database or the broker is away; run again later
    stopped = "stopped"  # cancelled, failed or already done


class BackfillError(Exception):
    """A request for a backfill that cannot be served (bad URI, no such backfill)."""


@dataclass(frozen=True)
class BackfillFilters:
    """Which listed objects become jobs; the others are counted as skipped."""

    extensions: tuple[str, ...] | None = VIDEO_EXTENSIONS  # None: every extension
    min_size: int = 1
    max_size: int | None = None
    modified_since: datetime | None = None

    def accepts(self, obj: ListedObject) -> bool:
        if obj.key.endswith("/") or obj.size < self.min_size:
            return False  # folder markers and empty objects
        if self.max_size is not None and obj.size > self.max_size:
            return False
        if self.modified_since is not None and (
            obj.last_modified is None or obj.last_modified < self.modified_since
        ):
            return False
        if self.extensions is None:
            return True
        ext = posixpath.splitext(obj.key)[1].lstrip(".").lower()
        return ext in self.extensions

    def to_dict(self) -> dict[str, Any]:
        return {
            "extensions": list(self.extensions) if self.extensions is not None else None,
            "min_size": self.min_size,
            "max_size": self.max_size,
            "modified_since": self.modified_since.isoformat() if self.modified_since else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackfillFilters:
        exts = d.get("extensions", list(VIDEO_EXTENSIONS))
        since = d.get("modified_since")
        return cls(
            extensions=tuple(e.lower().lstrip(".") for e in exts) if exts is not None else None,
            min_size=int(d.get("min_size", 1)),
            max_size=int(d["max_size"]) if d.get("max_size") is not None else None,
            modified_since=as_utc(datetime.fromisoformat(since)) if since else None,
        )


@dataclass(frozen=True)
class BackfillCounts:
    listed: int
    skipped: int
    queued: int
    succeeded: int
    failed: int

    @property
    def pending(self) -> int:
        return self.queued - self.succeeded - self.failed


@dataclass(frozen=True)
class ObjectFailure:
    key: str
    reason: str | None
    detail: str | None


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_prefix_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix); the prefix may be empty (the whole bucket)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise BackfillError(f"not an s3://bucket/prefix URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def create_backfill(
    session: Session,
    settings: Settings,
    *,
    source_uri: str,
    filters: BackfillFilters,
    options: dict[str, Any] | None = None,
    output_uri: str | None = None,
    model: ModelVersion | None = None,
    tenant_id: uuid.UUID = DEFAULT_TENANT_ID,
) -> Backfill:
    """A new backfill row for ``model`` (default: the served default, ``served.resolve``)."""
    model = model or served.resolve(session, settings)
    bucket, prefix = parse_prefix_uri(source_uri)
    if output_uri is not None:
        parse_prefix_uri(output_uri)
    backfill = Backfill(
        tenant_id=tenant_id,
        source_uri=f"s3://{bucket}/{prefix}",
        status=BackfillStatus.listing,
        bucket=bucket,
        prefix=prefix,
        model_name=model.name,
        model_version=model.version,
        filters=filters.to_dict(),
        options=options or {},
        output_uri=output_uri,
        objects_listed=0,
        objects_skipped=0,
        jobs_created=0,
        jobs_succeeded=0,
        jobs_failed=0,
        created_at=utcnow(),
        updated_at=utcnow(),
    )
    session.add(backfill)
    session.flush()
    return backfill


def find_interrupted(
    session: Session,
    settings: Settings,
    *,
    source_uri: str,
    filters: BackfillFilters,
    model: ModelVersion | None = None,
) -> Backfill | None:
    """The latest backfill of the same prefix, filters and model whose listing never finished."""
    model = model or served.resolve(session, settings)
    bucket, prefix = parse_prefix_uri(source_uri)
    candidates = session.scalars(
        select(Backfill)
        .where(
            Backfill.bucket == bucket,
            Backfill.prefix == prefix,
            Backfill.kind == BackfillKind.s3,
            Backfill.model_name == model.name,
            Backfill.model_version == model.version,
            Backfill.status == BackfillStatus.listing,
        )
        .order_by(Backfill.created_at.desc())
    )
    wanted = filters.to_dict()
    return next((b for b in candidates if b.filters == wanted), None)
