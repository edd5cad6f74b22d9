"""Windows of an indexed video: the thumbnail of each (a frame the model saw)."""

from __future__ import annotations

import uuid
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.api.deps import SessionDep, StorageDep, WindowIndexPath
from services.api.guard import ReadDep
from services.core.models import IndexedWindow, Video
from services.core.storage import ObjectNotFoundError, StorageError
from services.core.tenancy import get_owned
from services.core.thumbnails import CONTENT_TYPE

router = APIRouter(prefix="/v1/videos/{video_id}/windows", tags=["videos"])

ModelVersionQuery = Annotated[
    str | None, Query(max_length=200, description="the model version (default: the latest that indexed it)")
]


def thumbnail_url(video_id: uuid.UUID, window_index: int | None, model_version: str) -> str | None:
    """Where a window's thumbnail is served (None when the window is unknown)."""
    if window_index is None:
        return None
    version = quote(model_version, safe="")
    return f"/v1/videos/{video_id}/windows/{window_index}/thumbnail?model_version={version}"


def find_window(
    session: Session, video_id: uuid.UUID, window_index: int, model_version: str | None
) -> IndexedWindow:
    """The window's row (the latest model version that indexed the video by default), or 404."""
    query = select(IndexedWindow).where(
        IndexedWindow.video_id == video_id, IndexedWindow.window_index == window_index
    )
    if model_version is not None:
        query = query.where(IndexedWindow.model_version == model_version)
    window = session.scalars(query.order_by(IndexedWindow.id.desc()).limit(1)).first()
    if window is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such window")
    return window


@router.get(
    "/{window_index}/thumbnail",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "a JPEG"}, 404: {"description": "none"}},
)
async def get_thumbnail(
    video_id: uuid.UUID,
    window_index: WindowIndexPath,
    session: SessionDep,
    storage: StorageDep,
    caller: ReadDep,
    model_version: ModelVersionQuery = None,
) -> Response:
    """The window's thumbnail: its clip's middle frame, as the model saw it."""
    if await run_in_threadpool(get_owned, session, Video, video_id, caller.sees) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such window")
    window = await run_in_threadpool(find_window, session, video_id, window_index, model_version)
    if window.thumbnail_key is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this window has no thumbnail")
    try:
        body = await run_in_threadpool(storage.read_bytes, window.thumbnail_key)
    except ObjectNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this window's thumbnail is gone") from exc
    except StorageError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "object storage unavailable", headers={"Retry-After": "10"}
        ) from exc
    return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "private, max-age=86400"})
