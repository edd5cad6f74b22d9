"""Reindex: which indexed videos a move to another model version takes along.

``--where`` clauses select them (a label they were given, when they arrived, where they came from,
which version indexed them); ``matching_videos`` pages through them in video-id order, so a reindex
stores the last id it handled as its cursor and resumes after it, as a backfill resumes after a key."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, exists, or_, select
from sqlalchemy.orm import Session

from services.core.models import Job, JobStatus, Video, VideoLabel
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


def _matching(filters: ReindexFilters) -> Select[tuple[uuid.UUID]]:
    query = select(Video.id)
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
    session: Session, filters: ReindexFilters, *, after: uuid.UUID | None, limit: int
) -> list[uuid.UUID]:
    """The next ``limit`` ids of matching videos after ``after``, in id order."""
    query = _matching(filters)
    if after is not None:
        query = query.where(Video.id > after)
    return list(session.scalars(query.order_by(Video.id).limit(limit)))
