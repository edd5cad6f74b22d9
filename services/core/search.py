"""Label search over the index, shared by the API and the CLI.

Two questions, both answered best score first and paged by keyset (score, row id), each served by a
(label, score, id) index so a page costs the same on page 1 and page 1000:

- videos: which videos show ``label``, by the video-level score (mean over windows);
- moments: where in which videos ``label`` happens: runs of consecutive windows that have it among
  their top labels, by their best window's score, with start and end in milliseconds.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, or_, select

from services.core.models import LabelSegment, Video, VideoLabel


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
        try:
            return cls(float(score), int(row_id))
        except (TypeError, ValueError) as exc:
            raise ValueError("invalid cursor") from exc


@dataclass(frozen=True)
class PageRequest:
    """One page of a search: the label, its minimum score, optionally one model version, and where
    the page before ended. Several models may be served at once: ``model_name`` keeps one."""

    label: str
    min_score: float = 0.0
    model_version: str | None = None
    after: Cursor | None = None
    limit: int = 50
    model_name: str | None = None


def _page(table: type[VideoLabel] | type[LabelSegment], page: PageRequest) -> Select[Any]:
    query = (
        select(table, Video)
        .join(Video, Video.id == table.video_id)
        .where(table.label == page.label, table.score >= page.min_score)
    )
    if page.model_version is not None:
        query = query.where(table.model_version == page.model_version)
    if page.model_name is not None:
        query = query.where(table.model_name == page.model_name)
    if page.after is not None:
        after = page.after
        query = query.where(
            or_(table.score < after.score, and_(table.score == after.score, table.id < after.row_id))
        )
    # One row more than the page: whether there is a next page.
    return query.order_by(table.score.desc(), table.id.desc()).limit(page.limit + 1)


def video_hits(page: PageRequest) -> Select[tuple[VideoLabel, Video]]:
    """(VideoLabel, Video) rows whose video-level label scores at least ``min_score``, best first."""
    return _page(VideoLabel, page)


def moment_hits(page: PageRequest) -> Select[tuple[LabelSegment, Video]]:
    """(LabelSegment, Video) rows: the runs of windows whose best score for the label is at least
    ``min_score``, best first."""
    return _page(LabelSegment, page)


def split_page(rows: Sequence[Any], page: PageRequest) -> tuple[Sequence[Any], str | None]:
    """The rows of the page, and the cursor of the next one (None after the last page)."""
    if len(rows) <= page.limit:
        return rows, None
    last = rows[page.limit - 1][0]
    return rows[: page.limit], Cursor(last.score, last.id).encode()
