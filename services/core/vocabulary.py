"""Label lookup that forgives: find the index's label names from what a person types.

A query matches a label when, ignoring case and extra spaces, it is the label, starts it, starts one
of its words, occurs inside it, or is close to it or to one of its words (``difflib`` ratio, for
typos such as "jugling"). Matches come best kind first, then by how many videos have the label.
The vocabulary is the distinct labels the index holds (a few hundred per model), read once per
lookup, so the matching itself runs in Python on both SQLite and PostgreSQL.
"""

from __future__ import annotations

import difflib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.core.models import Video, VideoLabel

FUZZY_CUTOFF = 0.75  # difflib ratio: one or two typos in a word of eight letters


class MatchKind(IntEnum):
    """How a label matched, best first."""

    exact = 0
    prefix = 1
    word_prefix = 2
    substring = 3
    fuzzy = 4


@dataclass(frozen=True)
class LabelMatch:
    label: str
    videos: int
    kind: MatchKind


def _normal(text: str) -> str:
    return " ".join(text.casefold().split())


def match_kind(query: str, label: str) -> MatchKind | None:
    """How ``label`` matches ``query`` (None: it does not)."""
    q, name = _normal(query), _normal(label)
    if not q:
        return None
    if name == q:
        return MatchKind.exact
    if name.startswith(q):
        return MatchKind.prefix
    words = name.replace("(", " ").replace(")", " ").split()
    if any(word.startswith(q) for word in words):
        return MatchKind.word_prefix
    if q in name:
        return MatchKind.substring
    candidates = [name, *words]
    if any(difflib.SequenceMatcher(None, q, c).ratio() >= FUZZY_CUTOFF for c in candidates):
        return MatchKind.fuzzy
    return None


def find_labels(query: str, vocabulary: Sequence[tuple[str, int]], *, limit: int = 20) -> list[LabelMatch]:
    """The labels of ``vocabulary`` ((label, videos) pairs) that match ``query``, best first."""
    matches = []
    for label, videos in vocabulary:
        kind = match_kind(query, label)
        if kind is not None:
            matches.append(LabelMatch(label, videos, kind))
    matches.sort(key=lambda m: (m.kind, -m.videos, m.label))
    return matches[:limit]


def vocabulary(
    session: Session, *, model_version: str | None = None, tenant_id: uuid.UUID | None = None
) -> list[tuple[str, int]]:
    """Every label in the index (``tenant_id``'s videos only, when given) and how many videos have
    it, most common first."""
    videos = func.count(func.distinct(VideoLabel.video_id))
    query = select(VideoLabel.label, videos).group_by(VideoLabel.label)
    if tenant_id is not None:
        query = query.join(Video, Video.id == VideoLabel.video_id).where(Video.tenant_id == tenant_id)
    query = query.order_by(videos.desc(), VideoLabel.label)
    if model_version is not None:
        query = query.where(VideoLabel.model_version == model_version)
    return [(label, int(count)) for label, count in session.execute(query).all()]
