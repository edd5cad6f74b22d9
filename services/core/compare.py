"""What changed between two model versions over the same videos.

For every video that both versions indexed: the video-level labels gained and lost, whether the top
label agrees, the Jaccard index of the two label sets, and the moments that moved (a run of windows
of one label whose start or end shifted), appeared or disappeared. Videos are read in batches so
comparing a large index never holds every label in memory at once."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.core.models import LabelSegment, Video, VideoLabel, label_rows
from services.core.versions import ModelVersion

BATCH_VIDEOS = 500


@dataclass(frozen=True)
class Moment:
    label: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class MovedMoment:
    """One label's run of windows in both versions, overlapping, with other bounds."""

    label: str
    a: Moment
    b: Moment

    @property
    def start_shift_ms(self) -> int:
        return self.b.start_ms - self.a.start_ms

    @property
    def end_shift_ms(self) -> int:
        return self.b.end_ms - self.a.end_ms


@dataclass(frozen=True)
class VideoChange:
    video_id: uuid.UUID
    top_a: str | None
    top_b: str | None
    gained: tuple[str, ...]  # labels b has and a has not
    lost: tuple[str, ...]
    jaccard: float
    moved: tuple[MovedMoment, ...]
    appeared: tuple[Moment, ...]  # moments of b that overlap no moment of a of the same label
    vanished: tuple[Moment, ...]

    @property
    def changed(self) -> bool:
        return bool(self.gained or self.lost or self.moved or self.appeared or self.vanished) or (
            self.top_a != self.top_b
        )


@dataclass
class Comparison:
    """The figures over every compared video, and the videos that changed."""

    a: ModelVersion
    b: ModelVersion
    compared: int = 0  # videos both versions indexed
    only_a: int = 0  # videos only a indexed (of those asked about)
    only_b: int = 0
    top1_agreements: int = 0
    jaccard_sum: float = 0.0
    moments_moved: int = 0
    changes: list[VideoChange] = field(default_factory=list)

    @property
    def top1_agreement(self) -> float:
        return self.top1_agreements / self.compared if self.compared else 0.0

    @property
    def mean_jaccard(self) -> float:
        return self.jaccard_sum / self.compared if self.compared else 0.0

    def add(self, change: VideoChange) -> None:
        self.compared += 1
        self.top1_agreements += change.top_a == change.top_b
        self.jaccard_sum += change.jaccard
        self.moments_moved += len(change.moved)
        if change.changed:
            self.changes.append(change)


def _indexed(
    session: Session, model: ModelVersion, video_ids: Sequence[uuid.UUID] | None, tenant_id: uuid.UUID | None
) -> set[uuid.UUID]:
    query = (
        select(VideoLabel.video_id)
        .distinct()
        .where(VideoLabel.model_name == model.name, VideoLabel.model_version == model.version)
    )
    if video_ids is not None:
        query = query.where(VideoLabel.video_id.in_(video_ids))
    if tenant_id is not None:
        query = query.join(Video, Video.id == VideoLabel.video_id).where(Video.tenant_id == tenant_id)
    return set(session.scalars(query))


def _overlaps(x: Moment, y: Moment) -> bool:
    return x.start_ms < y.end_ms and y.start_ms < x.end_ms


def diff_moments(
    a: Iterable[Moment], b: Iterable[Moment]
) -> tuple[tuple[MovedMoment, ...], tuple[Moment, ...], tuple[Moment, ...]]:
    """Pair each moment of ``a`` with the first unpaired overlapping moment of ``b`` of the same label;
    returns (moved pairs, moments only in b, moments only in a)."""
    unpaired_b = sorted(b, key=lambda m: (m.label, m.start_ms))
    moved: list[MovedMoment] = []
    vanished: list[Moment] = []
    for ma in sorted(a, key=lambda m: (m.label, m.start_ms)):
        match = next((mb for mb in unpaired_b if mb.label == ma.label and _overlaps(ma, mb)), None)
        if match is None:
            vanished.append(ma)
            continue
        unpaired_b.remove(match)
        if match != ma:
            moved.append(MovedMoment(ma.label, ma, match))
    return tuple(moved), tuple(unpaired_b), tuple(vanished)


def _video_change(
    video_id: uuid.UUID,
    labels_a: Sequence[VideoLabel],
    labels_b: Sequence[VideoLabel],
    moments_a: Sequence[Moment],
    moments_b: Sequence[Moment],
) -> VideoChange:
    set_a, set_b = {r.label for r in labels_a}, {r.label for r in labels_b}
    union = set_a | set_b
    moved, appeared, vanished = diff_moments(moments_a, moments_b)
    return VideoChange(
        video_id=video_id,
        top_a=labels_a[0].label if labels_a else None,  # label_rows orders by rank
        top_b=labels_b[0].label if labels_b else None,
        gained=tuple(sorted(set_b - set_a)),
        lost=tuple(sorted(set_a - set_b)),
        jaccard=len(set_a & set_b) / len(union) if union else 1.0,
        moved=moved,
        appeared=appeared,
        vanished=vanished,
    )


Row = TypeVar("Row", VideoLabel, LabelSegment)


def _by_video(rows: Iterable[Row]) -> dict[uuid.UUID, list[Row]]:
    grouped: dict[uuid.UUID, list[Row]] = defaultdict(list)
    for row in rows:
        grouped[row.video_id].append(row)
    return grouped


def _moments(rows: Sequence[LabelSegment]) -> list[Moment]:
    return [Moment(r.label, r.start_ms, r.end_ms) for r in rows]


def compare_versions(
    session: Session,
    *,
    a: ModelVersion,
    b: ModelVersion,
    video_ids: Sequence[uuid.UUID] | None = None,
    tenant_id: uuid.UUID | None = None,
    batch_videos: int = BATCH_VIDEOS,
) -> Comparison:
    """Compare ``a`` and ``b`` over ``video_ids`` (default: every video both indexed), only the
    videos of ``tenant_id`` when given."""
    in_a, in_b = _indexed(session, a, video_ids, tenant_id), _indexed(session, b, video_ids, tenant_id)
    both = sorted(in_a & in_b)
    result = Comparison(a=a, b=b, only_a=len(in_a - in_b), only_b=len(in_b - in_a))
    for start in range(0, len(both), batch_videos):
        batch = both[start : start + batch_videos]
        labels = {
            m: _by_video(session.scalars(label_rows(VideoLabel, batch, m.name, m.version))) for m in (a, b)
        }
        moments = {
            m: _by_video(session.scalars(label_rows(LabelSegment, batch, m.name, m.version))) for m in (a, b)
        }
        for video_id in batch:
            result.add(
                _video_change(
                    video_id,
                    labels[a][video_id],
                    labels[b][video_id],
                    _moments(moments[a].get(video_id, [])),
                    _moments(moments[b].get(video_id, [])),
                )
            )
    return result
