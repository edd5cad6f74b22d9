"""Search by example: moments like a moment, like a window, or like an uploaded clip."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from services.api.deps import MomentIdPath, SessionDep, SettingsDep, WindowIndexPath
from services.api.guard import ReadDep
from services.api.routes.windows import ModelVersionQuery, thumbnail_url
from services.api.schemas import ModelRef, SimilarHit, SimilarPage
from services.core import similar
from services.core.sniff import SNIFF_BYTES, looks_like_video

router = APIRouter(tags=["search"])

LimitQuery = Annotated[int, Query(ge=1, le=200, description="how many windows")]
QUERY_CLIP_MAX_BYTES = 64 * 1024**2  # a short clip: a query, not an archive
CLIP_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


def _page(hits: list[similar.SimilarHit]) -> SimilarPage:
    return SimilarPage(
        items=[
            SimilarHit(
                video_id=h.neighbour.video_id,
                filename=h.filename,
                window_index=h.neighbour.window_index,
                start_ms=h.neighbour.start_ms,
                end_ms=h.neighbour.end_ms,
                score=h.neighbour.score,
                model=ModelRef(name=h.model.name, version=h.model.version),
                thumbnail_url=thumbnail_url(h.neighbour.video_id, h.neighbour.window_index, h.model.version)
                if h.neighbour.thumbnail_key
                else None,
            )
            for h in hits
        ]
    )


def _spool(upload: UploadFile, path: Path) -> None:
    with path.open("wb") as out:
        shutil.copyfileobj(upload.file, out)


def _answer(query: similar.SimilarError) -> None:
    """Raise the HTTP answer for a failed query."""
    if isinstance(query, similar.QueryNotFoundError):
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(query))
    if isinstance(query, similar.NoEmbeddingError | similar.QueryClipError):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(query))
    if isinstance(query, similar.EmbedderUnavailableError):
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(query), headers={"Retry-After": "10"})


@router.get("/v1/moments/{moment_id}/similar", responses={404: {}, 422: {}})
def moments_like_moment(
    moment_id: MomentIdPath, session: SessionDep, caller: ReadDep, limit: LimitQuery = 10
) -> SimilarPage:
    """Windows most like this moment's best window, by cosine similarity of clip embeddings."""
    try:
        return _page(similar.similar_to_moment(session, moment_id=moment_id, k=limit, tenant_id=caller.sees))
    except similar.SimilarError as exc:
        _answer(exc)
        raise


@router.get("/v1/videos/{video_id}/windows/{window_index}/similar", responses={404: {}, 422: {}})
def moments_like_window(
    video_id: uuid.UUID,
    window_index: WindowIndexPath,
    session: SessionDep,
    caller: ReadDep,
    model_version: ModelVersionQuery = None,
    limit: LimitQuery = 10,
) -> SimilarPage:
    """Windows most like this window of this video."""
    try:
        hits = similar.similar_to_window(
            session,
            video_id=video_id,
            window_index=window_index,
            model_version=model_version,
            k=limit,
            tenant_id=caller.sees,
        )
    except similar.SimilarError as exc:
        _answer(exc)
        raise
    return _page(hits)


@router.post(
    "/v1/moments/similar", openapi_extra=CLIP_FORM, responses={411: {}, 413: {}, 415: {}, 422: {}, 503: {}}
)
async def moments_like_clip(
    request: Request, session: SessionDep, settings: SettingsDep, caller: ReadDep, limit: LimitQuery = 10
) -> SimilarPage:
    """Windows most like an uploaded clip (multipart `file`), sampled as one window and embedded by
    the model that indexed the archive."""
    embedder: similar.ClipEmbedder | None = getattr(request.app.state, "clip_embedder", None)
    if embedder is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "this API process has no model to embed clips (start it with `tsmindex api`)",
        )
    limit_bytes = min(settings.max_upload_bytes, QUERY_CLIP_MAX_BYTES)
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        raise HTTPException(status.HTTP_411_LENGTH_REQUIRED, "send the clip with a Content-Length")
    if int(declared) > limit_bytes:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"send a clip of at most {limit_bytes} bytes")
    form = await request.form(max_files=1, max_fields=2)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "a file part is required")
        head = await upload.read(SNIFF_BYTES)
        if not looks_like_video(head):
            raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "the upload is not a video file")
        await upload.seek(0)
        with tempfile.TemporaryDirectory(prefix="tsmindex-query-") as tmp:
            path = Path(tmp) / "clip"
            await run_in_threadpool(_spool, upload, path)
            try:
                model, vector = await run_in_threadpool(embedder, path)
                hits = await run_in_threadpool(
                    lambda: similar.similar_to_vector(
                        session, model=model, vector=vector, k=limit, tenant_id=caller.sees
                    )
                )
            except similar.SimilarError as exc:
                _answer(exc)
                raise
    finally:
        await form.close()
    return _page(hits)
