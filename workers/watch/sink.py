"""Moments of live streams into the index, next to the archive's, so one search finds both.

A stream is a video row of its own (``source_uri`` ``stream://<stream id>``, the stream id as its
file name, no bytes stored) whose
moments are ``label_segments`` rows with times on the stream's timeline: a stream id used again goes on
after the end of what it holds. Only these two functions touch the tables; the caller owns the
transaction, as elsewhere.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.core.models import LabelSegment, Video

STREAM_SCHEME = "stream://"


@dataclass(frozen=True)
class StreamRow:
    video_id: uuid.UUID
    offset_ms: int  # where this run's time 0 falls on the stream's timeline


def open_stream(session: Session, *, stream_id: str) -> StreamRow:
    """The stream's video row (made on first use) and where a new run's moments start."""
    uri = STREAM_SCHEME + stream_id
    video = session.scalar(select(Video).where(Video.source_uri == uri))
    if video is None:
        video = Video(source_uri=uri, filename=stream_id, duration_s=0.0)
        session.add(video)
        session.flush()
    end = session.scalar(select(func.max(LabelSegment.end_ms)).where(LabelSegment.video_id == video.id))
    offset = max(int(end or 0), round((video.duration_s or 0.0) * 1000))
    return StreamRow(video_id=video.id, offset_ms=offset)


def write_moment(
    session: Session,
    stream: StreamRow,
    *,
    model_name: str,
    model_version: str,
    label: str,
    label_index: int,
    start_s: float,
    end_s: float,
    frames: int,
    best_score: float,
    mean_score: float,
) -> None:
    """One closed moment as a ``label_segments`` row (``windows`` counts its frames) and the stream's
    duration extended to its end."""
    start_ms, end_ms = stream.offset_ms + round(start_s * 1000), stream.offset_ms + round(end_s * 1000)
    session.add(
        LabelSegment(
            video_id=stream.video_id,
            model_name=model_name,
            model_version=model_version,
            label=label,
            label_index=label_index,
            score=best_score,
            start_ms=start_ms,
            end_ms=end_ms,
            windows=frames,
            mean_score=mean_score,
        )
    )
    video = session.get_one(Video, stream.video_id)
    video.duration_s = max(video.duration_s or 0.0, end_ms / 1000)
