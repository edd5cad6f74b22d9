"""Store stage: labels, windows (their top labels, thumbnail keys and embeddings) and moments
upserted by their unique keys (a redelivered run writes the same rows in place), the video's
metadata and the job's success, in one transaction that the run's lease guards: a run that lost its
lease stores nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, tuple_
from sqlalchemy.orm import Session

from services.core.db import dialect_insert
from services.core.indexing import jobs
from services.core.models import IndexedWindow, Job, LabelSegment, Video, VideoLabel, WindowLabel
from services.core.vectors import ModelKey, vector_store
from services.core.windows import (
    indexed_window_rows,
    label_segments,
    label_stats,
    video_label_rows,
    window_label_rows,
)
from workers.indexing.classify import Inferred
from workers.indexing.context import PipelineContext
from workers.indexing.snapshot import JobSnapshot
from workers.media.sampling import SampledVideo


@dataclass(frozen=True)
class Source:
    """What the fetch stage learnt about the bytes it read."""

    sha256: str
    size_bytes: int
    etag: str | None


def store(
    ctx: PipelineContext, job: JobSnapshot, sampled: SampledVideo, source: Source, inferred: Inferred
) -> Job | None:
    """The succeeded job, or None when this run no longer holds it (another run took over)."""
    key = {"video_id": job.video_id, "model_name": job.model_name, "model_version": job.model_version}
    windows = inferred.windows
    video_rows = video_label_rows(label_stats(windows, job.options), key)
    window_rows = window_label_rows(windows, job.options, key)
    segment_rows = [{**key, **segment} for segment in label_segments(window_rows)]
    indexed_rows = indexed_window_rows(windows, inferred.thumbnails, key)
    with ctx.sessions.begin() as session:
        row = jobs.held(session=session, job_id=job.job_id, owner=job.owner)
        if row is None:
            return None
        _describe_video(session, job, sampled, source)
        _replace(session, VideoLabel, key, video_rows, ("label",))
        _replace(session, WindowLabel, key, window_rows, ("window_index", "label"))
        _replace(session, LabelSegment, key, segment_rows, ("label", "start_ms"))
        _replace(session, IndexedWindow, key, indexed_rows, ("window_index",))
        model = ModelKey(job.model_name, job.model_version)
        vector_store(session).write(session, model=model, video_id=job.video_id, vectors=inferred.embeddings)
        row.sampling = sampled.sampling
        row.shortfall_frames = sampled.shortfall
        row.shortfall_windows = [s.window for s in sampled.shortfalls]
        row.decode_fallback = sampled.fallback is not None
        coverage = sampled.coverage
        row.covered_s = coverage.covered_s if coverage is not None else None
        row.truncated = bool(coverage is not None and coverage.truncated)
        # The webhook names the video's labels: its top_k best means.
        jobs.succeed(
            session=session, job=row, labels=[r for r in video_rows if r["rank"] <= job.options.top_k]
        )
        return row


def _describe_video(session: Session, job: JobSnapshot, sampled: SampledVideo, source: Source) -> None:
    info = sampled.info
    video = session.get_one(Video, job.video_id)
    video.duration_s = float(info.duration_s)
    video.fps = float(info.fps)
    video.width = int(info.width)
    video.height = int(info.height)
    video.codec = str(info.codec)
    video.size_bytes = source.size_bytes
    if source.etag is not None:
        video.source_etag = source.etag
    if video.sha256 != source.sha256:
        # Content hashes are unique: bytes another video already has leave this one without.
        taken = session.query(Video.id).filter(Video.sha256 == source.sha256, Video.id != video.id).first()
        video.sha256 = None if taken else source.sha256


LabelTable = type[VideoLabel] | type[WindowLabel] | type[LabelSegment] | type[IndexedWindow]


def _replace(
    session: Session,
    table: LabelTable,
    key: dict[str, Any],
    rows: list[dict[str, Any]],
    columns: tuple[str, ...],
) -> None:
    """Upsert ``rows`` and delete the rows of ``key`` that they do not name (an earlier run's)."""
    unique = [*key, *columns]
    if rows:
        insert = dialect_insert(session, table)
        updates = {c: insert.excluded[c] for c in rows[0] if c not in unique}
        session.execute(insert.on_conflict_do_update(index_elements=unique, set_=updates), rows)
    stale = delete(table).where(*(getattr(table, k) == v for k, v in key.items()))
    if rows:
        kept = [tuple(r[c] for c in columns) for r in rows]
        stale = stale.where(tuple_(*(getattr(table, c) for c in columns)).not_in(kept))
    session.execute(stale)
