"""Videos: search by label, one video's metadata and labels, delete. Submitting is ``uploads``."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy import select

from services.api.deps import SearchDep, SessionDep, SettingsDep, StorageDep, end_read
from services.api.guard import ReadDep, WriteDep
from services.api.routes.jobs import job_out
from services.api.routes.windows import thumbnail_url
from services.api.schemas import (
    NOT_FOUND,
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
from services.core.tenancy import get_owned, scoped
from services.core.thumbnails import thumbnail_keys

router = APIRouter(prefix="/v1/videos", tags=["videos"])


@router.get("")
def search_videos(session: SessionDep, caller: ReadDep, params: SearchDep) -> SearchPage:
    """Videos whose label scores at least `min_score`, best first: by the best window's score
    (`sort=peak`, the default) or the mean over all windows (`sort=mean`). Repeat `label` for
    several (`match=any|all`). `GET /v1/moments` answers the same per time window."""
    query = scoped(search.video_hits(params), Video.tenant_id, caller.sees)
    rows, next_cursor = search.split_page(session.execute(query).all(), params)
    items = [
        SearchHit(
            video_id=video.id,
            label=vl.label,
            score=vl.score,
            peak_score=vl.peak_score,
            peak_window=vl.peak_window,
            model=ModelRef(name=vl.model_name, version=vl.model_version),
            filename=video.filename,
            duration_s=video.duration_s,
            thumbnail_url=thumbnail_url(video.id, vl.peak_window, vl.model_version),
        )
        for vl, video in rows
    ]
    return SearchPage(items=items, next_cursor=next_cursor)


@router.get("/{video_id}", responses=NOT_FOUND)
def get_video(
    video_id: uuid.UUID,
    session: SessionDep,
    settings: SettingsDep,
    caller: ReadDep,
    model_version: Annotated[str | None, Query(max_length=200)] = None,
) -> VideoOut:
    """Metadata, video-level labels and the per-window timeline (latest indexed model by default)."""
    video = get_owned(session, Video, video_id, caller.sees)
    if video is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such video")
    jobs = session.scalars(select(Job).where(Job.video_id == video_id).order_by(Job.created_at.desc())).all()
    done = [j for j in jobs if j.status == JobStatus.succeeded]
    chosen = next((j for j in done if j.model_version == model_version), None) if model_version else None
    chosen = chosen or (done[0] if done and model_version is None else None)
    name = chosen.model_name if chosen else (jobs[0].model_name if jobs else "")
    version = chosen.model_version if chosen else (model_version or (jobs[0].model_version if jobs else ""))
    top_k = int((chosen.options if chosen else {}).get("top_k") or settings.top_k)
    # The video's labels: its top_k best means (every kept label has a row, for peak search).
    all_labels = session.scalars(label_rows(VideoLabel, [video_id], name, version))
    labels = [r for r in all_labels if r.rank <= top_k]
    segments = session.scalars(label_rows(LabelSegment, [video_id], name, version)).all()
    window_rows = session.scalars(label_rows(WindowLabel, [video_id], name, version)).all()
    windows: dict[int, WindowOut] = {}
    for row in window_rows:
        window = windows.setdefault(
            row.window_index,
            WindowOut(
                index=row.window_index,
                start_ms=row.start_ms,
                end_ms=row.end_ms,
                labels=[],
                thumbnail_url=thumbnail_url(video_id, row.window_index, version),
            ),
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
        labels=[
            LabelOut(
                label=r.label,
                index=r.label_index,
                score=r.score,
                rank=r.rank,
                peak_score=r.peak_score,
                peak_window=r.peak_window,
            )
            for r in labels
        ],
        segments=[
            SegmentOut(
                label=r.label,
                start_ms=r.start_ms,
                end_ms=r.end_ms,
                windows=r.windows,
                score=r.score,
                mean_score=r.mean_score,
                peak_window=r.peak_window,
            )
            for r in segments
        ],
        windows=list(windows.values()),
        jobs=[job_out(j) for j in jobs],
    )


@router.delete("/{video_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
def delete_video(video_id: uuid.UUID, session: SessionDep, storage: StorageDep, caller: WriteDep) -> None:
    """Remove the video, its jobs, labels and windows, our stored copy of its bytes and its thumbnails."""
    end_read(session)
    with session.begin():
        video = get_owned(session, Video, video_id, caller.sees)
        if video is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such video")
        storage_key = video.storage_key
        thumbnails = thumbnail_keys(session, video_id)
        session.delete(video)
    for key in [storage_key, *thumbnails]:
        if key is not None:
            storage.delete(key)
