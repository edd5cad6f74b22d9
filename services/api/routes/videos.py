"""Videos: search by label, one video's metadata and labels, delete. Submitting is ``uploads``."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy import select

from services.api.deps import ApiKeyDep, SearchDep, SessionDep, StorageDep, end_read
from services.api.routes.jobs import job_out
from services.api.schemas import (
    LabelOut,
    ModelRef,
    SearchHit,
    SearchPage,
    SegmentOut,
    VideoOut,
    WindowOut,
)
from services.core import search
from services.core.models import (
    Job,
    JobStatus,
    LabelSegment,
    Video,
    VideoLabel,
    WindowLabel,
    label_rows,
)

router = APIRouter(prefix="/v1/videos", tags=["videos"])


@router.get("")
def search_videos(session: SessionDep, _key: ApiKeyDep, params: SearchDep) -> SearchPage:
    """Videos whose video-level label `label` scores at least `min_score`, best first.
    `GET /v1/moments` answers the same per time window."""
    rows, next_cursor = search.split_page(session.execute(search.video_hits(params)).all(), params)
    items = [
        SearchHit(
            video_id=video.id,
            label=vl.label,
            score=vl.score,
            model=ModelRef(name=vl.model_name, version=vl.model_version),
            filename=video.filename,
            duration_s=video.duration_s,
        )
        for vl, video in rows
    ]
    return SearchPage(items=items, next_cursor=next_cursor)


@router.get("/{video_id}")
def get_video(
    video_id: uuid.UUID,
    session: SessionDep,
    _key: ApiKeyDep,
    model_version: Annotated[str | None, Query(max_length=200)] = None,
) -> VideoOut:
    """Metadata, video-level labels and the per-window timeline (latest indexed model by default)."""
    video = session.get(Video, video_id)
    if video is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such video")
    jobs = session.scalars(select(Job).where(Job.video_id == video_id).order_by(Job.created_at.desc())).all()
    done = [j for j in jobs if j.status == JobStatus.succeeded]
    chosen = next((j for j in done if j.model_version == model_version), None) if model_version else None
    chosen = chosen or (done[0] if done and model_version is None else None)
    name = chosen.model_name if chosen else (jobs[0].model_name if jobs else "")
    version = chosen.model_version if chosen else (model_version or (jobs[0].model_version if jobs else ""))
    labels = session.scalars(label_rows(VideoLabel, [video_id], name, version)).all()
    segments = session.scalars(label_rows(LabelSegment, [video_id], name, version)).all()
    window_rows = session.scalars(label_rows(WindowLabel, [video_id], name, version)).all()
    windows: dict[int, WindowOut] = {}
    for row in window_rows:
        window = windows.setdefault(
            row.window_index,
            WindowOut(index=row.window_index, start_ms=row.start_ms, end_ms=row.end_ms, labels=[]),
        )
        window.labels.append(LabelOut(label=row.label, index=row.label_index, score=row.score, rank=row.rank))
    return VideoOut(
        id=video.id,
        sha256=video.sha256,
        filename=video.filename,
        source_uri=video.source_uri,
        content_type=video.content_type,
        size_bytes=video.size_bytes,
        duration_s=video.duration_s,
        fps=video.fps,
        width=video.width,
        height=video.height,
        codec=video.codec,
        created_at=video.created_at,
        model=ModelRef(name=name, version=version),
        sampling=chosen.sampling if chosen else None,
        shortfall_frames=chosen.shortfall_frames if chosen else None,
        shortfall_windows=chosen.shortfall_windows if chosen else None,
        decode_fallback=chosen.decode_fallback if chosen else None,
        labels=[LabelOut(label=r.label, index=r.label_index, score=r.score, rank=r.rank) for r in labels],
        segments=[
            SegmentOut(
                label=r.label,
                start_ms=r.start_ms,
                end_ms=r.end_ms,
                windows=r.windows,
                score=r.score,
                mean_score=r.mean_score,
            )
            for r in segments
        ],
        windows=list(windows.values()),
        jobs=[job_out(j) for j in jobs],
    )


@router.delete("/{video_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_video(video_id: uuid.UUID, session: SessionDep, storage: StorageDep, _key: ApiKeyDep) -> None:
    """Remove the video, its jobs and labels, and our stored copy of its bytes."""
    end_read(session)
    with session.begin():
        video = session.get(Video, video_id)
        if video is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such video")
        storage_key = video.storage_key
        session.delete(video)
    if storage_key is not None:
        storage.delete(storage_key)
