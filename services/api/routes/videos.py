"""Videos: upload (multipart, streamed to storage) or S3 source, metadata and labels, search, delete."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from kombu.exceptions import OperationalError
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile
from starlette.types import Message, Receive

from services.api.deps import (
    ApiKeyDep,
    ProducerDep,
    SearchDep,
    SessionDep,
    SettingsDep,
    SourceS3Dep,
    StorageDep,
    resolve_model,
)
from services.api.routes.jobs import job_out
from services.api.schemas import (
    IndexOptions,
    JobOut,
    LabelOut,
    ModelRef,
    SearchHit,
    SearchPage,
    SegmentOut,
    SourceRequest,
    VideoOut,
    WindowOut,
)
from services.core import metrics, search
from services.core.config import Settings
from services.core.models import (
    IdempotencyKey,
    Job,
    JobStatus,
    LabelSegment,
    Video,
    VideoLabel,
    WindowLabel,
    label_rows,
)
from services.core.queue import enqueue_index_video
from services.core.sniff import SNIFF_BYTES, looks_like_video
from services.core.storage import (
    ObjectAccessDeniedError,
    ObjectNotFoundError,
    ObjectVersion,
    StorageError,
    UploadTooLargeError,
    parse_s3_uri,
    s3_object_version,
)
from services.core.versions import ModelVersion

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/videos", tags=["videos"])

FORM_OVERHEAD_BYTES = 1024 * 1024  # multipart boundaries and option fields around the file
MAX_JSON_BYTES = 64 * 1024
OPTION_FIELDS = ("window_s", "top_k", "min_score", "include", "exclude", "webhook_url")
MODEL_FIELD = "model"  # NAME or NAME:VERSION of a served model

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        **{name: {"type": "string"} for name in (*OPTION_FIELDS, MODEL_FIELD)},
                    },
                }
            },
            "application/json": {"schema": SourceRequest.model_json_schema()},
        },
    }
}


def _end_read(session: Session) -> None:
    """Close the read-only transaction that authentication began, so the route owns the next one.

    Commit rather than roll back: objects already loaded (the caller's key) stay valid."""
    if session.in_transaction():
        session.commit()


@dataclass(frozen=True)
class Registration:
    job: Job
    duplicate: bool
    enqueue: bool
    orphan_key: str | None  # our new copy of bytes we already had


def _register(
    session: Session,
    settings: Settings,
    *,
    api_key_id: uuid.UUID,
    idempotency_key: str | None,
    options: IndexOptions,
    model: ModelVersion,
    sha256: str | None = None,
    storage_key: str | None = None,
    size_bytes: int | None = None,
    filename: str | None = None,
    content_type: str | None = None,
    source_uri: str | None = None,
    source_etag: str | None = None,
) -> Registration:
    """Find or create the video and its job for ``model`` (a served version), in one transaction.

    A job that failed, or whose S3 source has changed (another ETag) since it was indexed, is queued
    again; one that never started is sent again."""
    for attempt in range(2):
        _end_read(session)
        try:
            with session.begin():
                if sha256 is not None:
                    video = session.scalar(select(Video).where(Video.sha256 == sha256))
                else:
                    video = session.scalar(select(Video).where(Video.source_uri == source_uri))
                duplicate = video is not None
                if video is None:
                    video = Video(
                        sha256=sha256,
                        storage_key=storage_key,
                        source_uri=source_uri,
                        size_bytes=size_bytes,
                        filename=filename,
                        content_type=content_type,
                    )
                    session.add(video)
                    session.flush()
                job = session.scalar(
                    select(Job).where(
                        Job.video_id == video.id,
                        Job.model_name == model.name,
                        Job.model_version == model.version,
                    )
                )
                enqueue = False
                if job is None:
                    job = Job(
                        video_id=video.id,
                        model_name=model.name,
                        model_version=model.version,
                        status=JobStatus.queued,
                        options=options.to_job_options(),
                    )
                    session.add(job)
                    session.flush()
                    enqueue = True
                elif job.status == JobStatus.failed or (
                    job.status == JobStatus.succeeded
                    and source_etag is not None
                    and video.source_etag not in (None, source_etag)
                ):
                    job.status = JobStatus.queued
                    job.reason = job.detail = None
                    job.attempts = 0
                    job.progress = 0.0
                    job.started_at = job.finished_at = None
                    job.options = options.to_job_options()
                    enqueue = True
                elif job.status == JobStatus.queued and job.attempts == 0:
                    # Never picked up: its message may have been lost before it reached the broker.
                    enqueue = True
                if idempotency_key is not None:
                    session.add(IdempotencyKey(api_key_id=api_key_id, key=idempotency_key, job_id=job.id))
                orphan = storage_key if duplicate and video.storage_key != storage_key else None
                return Registration(job=job, duplicate=duplicate, enqueue=enqueue, orphan_key=orphan)
        except IntegrityError:
            # A concurrent request inserted the same video or key first: the second pass finds it.
            if attempt == 1:
                raise
    raise AssertionError("unreachable")


def _parse_options(data: dict[str, Any]) -> IndexOptions:
    try:
        return IndexOptions.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc


def _check_webhook(options: IndexOptions, settings: Settings) -> None:
    if options.webhook_url is not None and settings.webhook_secret is None:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "webhook_url"),
                    "msg": "webhooks are disabled: the server has no TSMINDEX_WEBHOOK_SECRET",
                    "input": str(options.webhook_url),
                }
            ]
        )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=UPLOAD_BODY,
    responses={
        200: {"description": "the same bytes (or idempotency key) were already submitted", "model": JobOut},
        413: {"description": "upload larger than the limit"},
        415: {"description": "not a video"},
        422: {"description": "a bad field, or a `source_uri` that does not exist or cannot be read"},
        503: {"description": "the job queue or the object storage is unavailable; retry"},
    },
)
async def create_video(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    producer: ProducerDep,
    s3: SourceS3Dep,
    api_key: ApiKeyDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobOut:
    """Submit a video: a multipart `file` upload, or JSON `{"source_uri": "s3://bucket/key"}`."""
    if idempotency_key is not None:
        known = await run_in_threadpool(session.get, IdempotencyKey, (api_key.id, idempotency_key))
        if known is not None:
            job = await run_in_threadpool(session.get_one, Job, known.job_id)
            response.status_code = status.HTTP_200_OK
            response.headers["Location"] = f"/v1/jobs/{job.id}"
            return job_out(job, duplicate=True)

    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        registration = await _accept_upload(request, session, settings, storage, api_key.id, idempotency_key)
    elif content_type.startswith("application/json"):
        registration = await _accept_source(request, session, settings, s3, api_key.id, idempotency_key)
    else:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            'send multipart/form-data with a "file" part, or JSON with "source_uri"',
        )

    if registration.orphan_key is not None:
        await run_in_threadpool(storage.delete, registration.orphan_key)
    if registration.enqueue:
        # After the commit: a worker that picks the id up finds the row.
        try:
            await run_in_threadpool(enqueue_index_video, producer, str(registration.job.id))
        except OperationalError as exc:
            # The job row stays queued and unsent; submitting the same video again sends it.
            log.error("broker unavailable, job %s not sent: %s", registration.job.id, exc)
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"job queue unavailable: job {registration.job.id} is recorded; submit again to send it",
                headers={"Retry-After": "10", "Location": f"/v1/jobs/{registration.job.id}"},
            ) from exc
    response.headers["Location"] = f"/v1/jobs/{registration.job.id}"
    if registration.duplicate:
        response.status_code = status.HTTP_200_OK
    return job_out(registration.job, duplicate=registration.duplicate)


def _too_large(limit: int) -> HTTPException:
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"uploads are limited to {limit} bytes")


def _limited_receive(receive: Receive, limit: int, max_upload_bytes: int) -> Receive:
    """``receive`` that raises 413 once the request body passes ``limit`` bytes."""
    received = 0

    async def limited() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _too_large(max_upload_bytes)
        return message

    return limited


async def _accept_upload(
    request: Request,
    session: Session,
    settings: Settings,
    storage: StorageDep,
    api_key_id: uuid.UUID,
    idempotency_key: str | None,
) -> Registration:
    limit = settings.max_upload_bytes + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(settings.max_upload_bytes)
    # Starlette spools the file part to a temporary file on disk past 1 MB, never whole in memory;
    # a body sent without a length (chunked) is cut off as soon as it passes the limit.
    body = Request(request.scope, _limited_receive(request.receive, limit, settings.max_upload_bytes))
    form = await body.form(max_files=1, max_fields=len(OPTION_FIELDS) + 6)
    try:
        upload = form.get("file")
        fields = {
            name: form.getlist(name) if name in ("include", "exclude") else form.get(name)
            for name in OPTION_FIELDS
        }
        options = _parse_options({k: v for k, v in fields.items() if v not in (None, "", [])})
        _check_webhook(options, settings)
        requested = form.get(MODEL_FIELD)
        model = await run_in_threadpool(
            resolve_model, session, settings, requested if isinstance(requested, str) and requested else None
        )
        if not isinstance(upload, UploadFile):
            raise RequestValidationError(
                [
                    {
                        "type": "missing",
                        "loc": ("body", "file"),
                        "msg": "a file part is required",
                        "input": None,
                    }
                ]
            )
        head = await upload.read(SNIFF_BYTES)
        await upload.seek(0)
        if not looks_like_video(head):
            raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "the upload is not a video file")
        key = f"uploads/{uuid.uuid4()}"
        try:
            stored = await run_in_threadpool(
                storage.put_stream, key, upload.file, max_bytes=settings.max_upload_bytes
            )
        except UploadTooLargeError as exc:
            raise _too_large(exc.limit) from exc
        metrics.UPLOADED_BYTES.inc(stored.size_bytes)
        try:
            return await run_in_threadpool(
                lambda: _register(
                    session,
                    settings,
                    api_key_id=api_key_id,
                    idempotency_key=idempotency_key,
                    options=options,
                    model=model,
                    sha256=stored.sha256,
                    storage_key=stored.key,
                    size_bytes=stored.size_bytes,
                    filename=upload.filename,
                    content_type=upload.content_type,
                )
            )
        except Exception:
            await run_in_threadpool(storage.delete, stored.key)
            raise
    finally:
        await form.close()


async def _accept_source(
    request: Request,
    session: Session,
    settings: Settings,
    s3: Any,
    api_key_id: uuid.UUID,
    idempotency_key: str | None,
) -> Registration:
    body = await request.body()
    if len(body) > MAX_JSON_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "JSON body too large")
    try:
        source = SourceRequest.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc
    _check_webhook(source, settings)
    model = await run_in_threadpool(resolve_model, session, settings, source.model)
    version = await run_in_threadpool(_source_version, s3, source.source_uri)
    return await run_in_threadpool(
        lambda: _register(
            session,
            settings,
            api_key_id=api_key_id,
            idempotency_key=idempotency_key,
            options=source,
            model=model,
            source_uri=source.source_uri,
            source_etag=version.etag or None,
        )
    )


def _source_version(s3: Any, uri: str) -> ObjectVersion:
    """HEAD the source: a missing or unreadable object is the caller's to fix, now rather than as a
    failed job later; its ETag tells a changed object from the one already indexed."""
    bucket, key = parse_s3_uri(uri)
    try:
        return s3_object_version(s3, bucket, key)
    except (ObjectNotFoundError, ObjectAccessDeniedError) as exc:
        missing = isinstance(exc, ObjectNotFoundError)
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "source_uri"),
                    "msg": f"{uri} {'does not exist' if missing else 'cannot be read with our credentials'}",
                    "input": uri,
                }
            ]
        ) from exc
    except StorageError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "object storage unavailable", headers={"Retry-After": "10"}
        ) from exc


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
    _end_read(session)
    with session.begin():
        video = session.get(Video, video_id)
        if video is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such video")
        storage_key = video.storage_key
        session.delete(video)
    if storage_key is not None:
        storage.delete(storage_key)
