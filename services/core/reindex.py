"""Reindex: indexed videos submitted again under another model version.

``--where`` clauses select them (a label they were given, when they arrived, where they came from,
which version indexed them). A reindex is a backfill of kind ``reindex`` (services.core.backfills): the
same runner lists the matching videos in id order instead of an S3 prefix's keys, one job per video
for the new version, paced by the queue cap, resumable after its cursor (the last video id), counted
and cancelled the same way. Each video stands as the listed "object": key its id, ETag its hash."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, exists, or_, select
from sqlalchemy.orm import Session, sessionmaker

from services.core.backfills import BackfillKind, BackfillStatus, ListedObject
from services.core.models import DEFAULT_TENANT_ID, Backfill, Job, JobStatus, Video, VideoLabel, utcnow
from services.core.versions import ModelVersion, ModelVersionError

WHERE_KEYS = ("label", "min_score", "since", "until", "prefix", "from")


class ReindexFilterError(ValueError):
    """A ``--where`` clause that is not ``KEY=VALUE`` with a known key and a valid value."""


@dataclass(frozen=True)
class ReindexFilters:
    label: str | None = None  # a video-level label the video has (under ``source`` if given)
    min_score: float = 0.0  # ... scoring at least this
    since: datetime | None = None  # the video arrived at or after
    until: datetime | None = None  # ... and before
    prefix: str | None = None  # its source URI or file name starts with this
    source: ModelVersion | None = None  # only videos this version indexed

    @classmethod
    def parse(cls, clauses: Sequence[str]) -> ReindexFilters:
        """``["label=juggling balls", "since=2024-01-01", "prefix=s3://media/cam7/", "from=tsm:1"]``."""
        values: dict[str, Any] = {}
        for clause in clauses:
            key, sep, value = clause.partition("=")
            key, value = key.strip().lower(), value.strip()
            if not sep or key not in WHERE_KEYS or not value:
                raise ReindexFilterError(
                    f"{clause!r}: expected KEY=VALUE with KEY one of {', '.join(WHERE_KEYS)}"
                )
            try:
                values[key] = _value(key, value)
            except (ValueError, ModelVersionError) as exc:
                raise ReindexFilterError(f"{clause!r}: {exc}") from exc
        return cls(
            label=values.get("label"),
            min_score=values.get("min_score", 0.0),
            since=values.get("since"),
            until=values.get("until"),
            prefix=values.get("prefix"),
            source=values.get("from"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "min_score": self.min_score,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "prefix": self.prefix,
            "from": str(self.source) if self.source else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReindexFilters:
        return cls.parse([f"{k}={v}" for k, v in d.items() if v is not None and k in WHERE_KEYS])


def _value(key: str, value: str) -> Any:
    if key == "min_score":
        score = float(value)
        if not 0.0 <= score <= 1.0:
            raise ValueError("min_score is between 0 and 1")
        return score
    if key in ("since", "until"):
        when = datetime.fromisoformat(value)
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    if key == "from":
        return ModelVersion.parse(value)
    return value


def _matching(filters: ReindexFilters, tenant_id: uuid.UUID) -> Select[tuple[uuid.UUID]]:
    query = select(Video.id).where(Video.tenant_id == tenant_id)
    if filters.label is not None:
        labelled = [VideoLabel.video_id == Video.id, VideoLabel.label == filters.label]
        labelled.append(VideoLabel.score >= filters.min_score)
        if filters.source is not None:
            labelled += [
                VideoLabel.model_name == filters.source.name,
                VideoLabel.model_version == filters.source.version,
            ]
        query = query.where(exists().where(*labelled))
    elif filters.source is not None:
        query = query.where(
            exists().where(
                Job.video_id == Video.id,
                Job.model_name == filters.source.name,
                Job.model_version == filters.source.version,
                Job.status == JobStatus.succeeded,
            )
        )
    if filters.since is not None:
        query = query.where(Video.created_at >= filters.since)
    if filters.until is not None:
        query = query.where(Video.created_at < filters.until)
    if filters.prefix is not None:
        query = query.where(
            or_(
                Video.source_uri.startswith(filters.prefix, autoescape=True),
                Video.filename.startswith(filters.prefix, autoescape=True),
            )
        )
    return query


def matching_videos(
    session: Session,
    filters: ReindexFilters,
    *,
    after: uuid.UUID | None,
    limit: int,
    tenant_id: uuid.UUID = DEFAULT_TENANT_ID,
) -> list[uuid.UUID]:
    """The next ``limit`` ids of the tenant's matching videos after ``after``, in id order."""
    query = _matching(filters, tenant_id)
    if after is not None:
        query = query.where(Video.id > after)
    return list(session.scalars(query.order_by(Video.id).limit(limit)))


def index_pages(
    sessions: sessionmaker[Session],
    filters: ReindexFilters,
    *,
    start_after: str | None,
    page_size: int,
    tenant_id: uuid.UUID = DEFAULT_TENANT_ID,
) -> Iterator[list[ListedObject]]:
    """Pages of matching videos after the video id ``start_after``, as a backfill lists objects."""
    after = uuid.UUID(start_after) if start_after else None
    while True:
        with sessions() as session:
            ids = matching_videos(session, filters, after=after, limit=page_size, tenant_id=tenant_id)
            videos = {v.id: v for v in session.scalars(select(Video).where(Video.id.in_(ids)))}
            page = [
                ListedObject(
                    key=str(i),
                    etag=videos[i].sha256 or "",
                    size=videos[i].size_bytes or 0,
                    last_modified=videos[i].created_at,
                )
                for i in ids
            ]
        if not page:
            return
        yield page
        after = ids[-1]


def describe(filters: ReindexFilters) -> str:
    """``index:label=run&from=tsm:1``: what the reindex row shows as its source."""
    return "index:" + "&".join(f"{k}={v}" for k, v in filters.to_dict().items() if v is not None and v != 0.0)


def create_reindex(
    session: Session,
    *,
    filters: ReindexFilters,
    model: ModelVersion,
    options: dict[str, Any] | None = None,
    tenant_id: uuid.UUID = DEFAULT_TENANT_ID,
) -> Backfill:
    """A new reindex of the tenant's videos ``filters`` select to ``model`` (the caller commits)."""
    now = utcnow()
    row = Backfill(
        tenant_id=tenant_id,
        kind=BackfillKind.reindex,
        source_uri=describe(filters),
        status=BackfillStatus.listing,
        bucket="",
        prefix="",
        model_name=model.name,
        model_version=model.version,
        filters=filters.to_dict(),
        options=options or {},
        objects_listed=0,
        objects_skipped=0,
        jobs_created=0,
        jobs_succeeded=0,
        jobs_failed=0,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row


def find_interrupted_reindex(
    session: Session,
    *,
    filters: ReindexFilters,
    model: ModelVersion,
    tenant_id: uuid.UUID = DEFAULT_TENANT_ID,
) -> Backfill | None:
    """The latest reindex of the same filters and model whose listing never finished."""
    return session.scalars(
        select(Backfill)
        .where(
            Backfill.kind == BackfillKind.reindex,
            Backfill.tenant_id == tenant_id,
            Backfill.source_uri == describe(filters),
            Backfill.model_name == model.name,
            Backfill.model_version == model.version,
            Backfill.status == BackfillStatus.listing,
        )
        .order_by(Backfill.created_at.desc())
    ).first()
