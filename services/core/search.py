"""Label search over the index, shared by the API and the CLI.

Two questions, both answered best score first and paged by keyset (score, row id); for one label
each is served by a (label, score, id) index so a page costs the same on page 1 and page 1000:

- videos: which videos show the label, by its peak (the best window's score: a short action in a
  long video ranks where it belongs) or by its mean over all windows (``sort``);
- moments: where in which videos the label happens: runs of consecutive windows that have it among
  their top labels, by their best window's score, with start and end in milliseconds, optionally
  only those overlapping a time range.

Several labels match ``any`` of them (a video's best one ranks it) or ``all`` of them (a video must
have each; a moment's video must have each in the time range).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from sqlalchemy import ColumnElement, Select, and_, exists, func, or_, select
from sqlalchemy.orm import aliased

from services.core.models import LabelSegment, Video, VideoLabel

Sort = Literal["peak", "mean"]
Match = Literal["any", "all"]
SORTS: tuple[Sort, ...] = get_args(Sort)
MATCHES: tuple[Match, ...] = get_args(Match)


def encode_cursor(values: Sequence[str | float | int]) -> str:
    """An opaque keyset cursor for any listing: the sort key of the last row of a page."""
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode()


def decode_cursor(text: str, size: int) -> list[Any]:
    """The ``size`` values ``encode_cursor`` wrote; anything else raises ``ValueError``."""
    try:
        values = json.loads(base64.urlsafe_b64decode(text.encode()))
    except (ValueError, binascii.Error) as exc:
        raise ValueError("invalid cursor") from exc
    if not isinstance(values, list) or len(values) != size:
        raise ValueError("invalid cursor")
    return values


@dataclass(frozen=True)
class Cursor:
    """Where a search page ended: the last row's score and id."""

    score: float
    row_id: int

    def encode(self) -> str:
        return encode_cursor([self.score, self.row_id])

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Parse a cursor this class encoded; anything else raises ``ValueError``."""
        score, row_id = decode_cursor(text, 2)
        # bool is an int to Python; 1e400 parses as inf, which no database compares sanely.
        if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
            raise ValueError("invalid cursor")
        if isinstance(row_id, bool) or not isinstance(row_id, int) or not -(2**63) <= row_id < 2**63:
            raise ValueError("invalid cursor")
        return cls(float(score), row_id)


@dataclass(frozen=True)
class PageRequest:
    """One page of a search: the labels (``match`` any or all), the minimum score, optionally one
    model version and a time range (moments), the sort (videos) and where the page before ended.
    Several models may be served at once: ``model_name`` keeps one model's hits."""

    label: str | Sequence[str]
    min_score: float = 0.0
    model_version: str | None = None
    after: Cursor | None = None
    limit: int = 50
    sort: Sort = "peak"
    match: Match = "any"
    start_ms: int | None = None  # moments overlapping [start_ms, end_ms)
    end_ms: int | None = None
    model_name: str | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        return (self.label,) if isinstance(self.label, str) else tuple(dict.fromkeys(self.label))


def _keyset(query: Select[Any], score: Any, row_id: Any, page: PageRequest) -> Select[Any]:
    if page.after is not None:
        after = page.after
        query = query.where(or_(score < after.score, and_(score == after.score, row_id < after.row_id)))
    # One row more than the page: whether there is a next page.
    return query.order_by(score.desc(), row_id.desc()).limit(page.limit + 1)


def video_score(page: PageRequest) -> Any:
    """The column video search ranks by."""
    return VideoLabel.peak_score if page.sort == "peak" else VideoLabel.score


def video_hits(page: PageRequest) -> Select[tuple[VideoLabel, Video]]:
    """(VideoLabel, Video) rows whose label scores at least ``min_score`` (by ``sort``), best first;
    with several labels, one row per video: its best matching label."""
    score = video_score(page)
    labels = page.labels
    if len(labels) == 1:
        query = (
            select(VideoLabel, Video)
            .join(Video, Video.id == VideoLabel.video_id)
            .where(VideoLabel.label == labels[0], score >= page.min_score)
        )
        query = query.where(*_model(VideoLabel, page))
        return _keyset(query, score, VideoLabel.id, page)
    per_video = (VideoLabel.video_id, VideoLabel.model_name, VideoLabel.model_version)
    ranked = select(
        VideoLabel.id.label("hit_id"),
        score.label("hit_score"),
        func.row_number()
        .over(partition_by=per_video, order_by=(score.desc(), VideoLabel.id.desc()))
        .label("n"),
        func.count().over(partition_by=per_video).label("found"),
    ).where(VideoLabel.label.in_(labels), score >= page.min_score)
    ranked = ranked.where(*_model(VideoLabel, page))
    best = ranked.subquery()
    query = (
        select(VideoLabel, Video)
        .join(best, best.c.hit_id == VideoLabel.id)
        .join(Video, Video.id == VideoLabel.video_id)
        .where(best.c.n == 1)
    )
    if page.match == "all":
        query = query.where(best.c.found == len(labels))
    return _keyset(query, best.c.hit_score, VideoLabel.id, page)


def _model(table: Any, page: PageRequest) -> list[ColumnElement[bool]]:
    conditions = []
    if page.model_version is not None:
        conditions.append(table.model_version == page.model_version)
    if page.model_name is not None:
        conditions.append(table.model_name == page.model_name)
    return conditions


def _in_range(table: Any, page: PageRequest) -> list[ColumnElement[bool]]:
    conditions = []
    if page.start_ms is not None:
        conditions.append(table.end_ms > page.start_ms)
    if page.end_ms is not None:
        conditions.append(table.start_ms < page.end_ms)
    return conditions


def moment_hits(page: PageRequest) -> Select[tuple[LabelSegment, Video]]:
    """(LabelSegment, Video) rows: the runs of windows whose best score for a label is at least
    ``min_score`` (and that overlap the time range), best first."""
    labels = page.labels
    label = LabelSegment.label == labels[0] if len(labels) == 1 else LabelSegment.label.in_(labels)
    query = (
        select(LabelSegment, Video)
        .join(Video, Video.id == LabelSegment.video_id)
        .where(label, LabelSegment.score >= page.min_score, *_in_range(LabelSegment, page))
    )
    query = query.where(*_model(LabelSegment, page))
    if page.match == "all" and len(labels) > 1:
        for other in labels:
            peer = aliased(LabelSegment)
            query = query.where(
                exists().where(
                    peer.video_id == LabelSegment.video_id,
                    peer.model_name == LabelSegment.model_name,
                    peer.model_version == LabelSegment.model_version,
                    peer.label == other,
                    peer.score >= page.min_score,
                    *_in_range(peer, page),
                )
            )
    return _keyset(query, LabelSegment.score, LabelSegment.id, page)


def split_page(rows: Sequence[Any], page: PageRequest) -> tuple[Sequence[Any], str | None]:
    """The rows of the page, and the cursor of the next one (None after the last page)."""
    if len(rows) <= page.limit:
        return rows, None
    last = rows[page.limit - 1][0]
    score = last.peak_score if isinstance(last, VideoLabel) and page.sort == "peak" else last.score
    return rows[: page.limit], Cursor(score, last.id).encode()
