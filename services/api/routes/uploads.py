"""Submitting a video: a multipart upload streamed to storage, or an S3 source by URI.

No database connection is held while the body streams: authentication's read ends first, and the
video and job are registered (``indexing.jobs.submit``) in one short transaction once the bytes are
stored. Uploads beyond ``TSMINDEX_API_MAX_CONCURRENT_UPLOADS`` answer 503 with ``Retry-After``. The
job's wake-up message is sent after the commit; with the broker down the job is still accepted and
the reaper sends it later.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import UploadFile

from services.api.deps import (
    ProducerDep,
    SessionDep,
    SettingsDep,
    SourceS3Dep,
    StorageDep,
    end_read,
    resolve_model,
)
from services.api.guard import Principal, WriteDep, check_allowed
from services.api.routes.jobs import job_out
from services.api.schemas import JobOut, SourceRequest
from services.core import metrics, webhooks
from services.core.config import Settings
from services.core.db import dialect_insert
from services.core.indexing import jobs
from services.core.indexing.errors import reason_for
from services.core.indexing.options import IndexOptions
from services.core.models import IdempotencyKey, Job, Video
from services.core.outbound import redact_url
from services.core.queue import enqueue_index_video
from services.core.sniff import SNIFF_BYTES, looks_like_video
from services.core.storage import (
    ObjectAccessDeniedError,
    ObjectNotFoundError,
    ObjectVersion,
    UploadTooLargeError,
    parse_s3_uri,
    s3_object_version,
)
from services.core.versions import ModelVersion

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/videos", tags=["videos"])

OPTION_FIELDS = ("window_s", "top_k", "min_score", "include", "exclude", "webhook_url", "sampling")
MODEL_FIELD = "model"  # NAME or NAME:VERSION of a served model
RETRY_AFTER_S = "5"

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


class UploadSlots:
    """How many submissions may stream at once in this process (one event loop: no lock needed)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    @asynccontextmanager
    async def take(self) -> AsyncIterator[None]:
        if self.in_use >= self.limit:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"{self.limit} uploads are in progress; retry shortly",
                headers={"Retry-After": RETRY_AFTER_S},
            )
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=UPLOAD_BODY,
    responses={
        200: {"description": "the same bytes (or idempotency key) were already submitted", "model": JobOut},
        413: {"description": "upload larger than the limit"},
        415: {"description": "not a video"},
        422: {"description": "a bad field, or a `source_uri` that does not exist or cannot be read"},
        503: {"description": "busy, or the database or object storage is unavailable; retry after"},
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
    caller: WriteDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobOut:
    """Submit a video: a multipart `file` upload, or JSON `{"source_uri": "s3://bucket/key"}`.

    An `Idempotency-Key` answers its first job again for the same request (same bytes or source,
    same options) and 422 for a different one."""
    await run_in_threadpool(end_read, session)  # no connection held while the body streams

    content_type = request.headers.get("content-type", "")
    slots: UploadSlots = request.app.state.upload_slots
    async with slots.take():
        if content_type.startswith("multipart/form-data"):
            submission = await _accept_upload(request, session, settings, storage, caller, idempotency_key)
        elif content_type.startswith("application/json"):
            submission = await _accept_source(request, session, settings, s3, caller, idempotency_key)
        else:
            raise HTTPException(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                'send multipart/form-data with a "file" part, or JSON with "source_uri"',
            )

    if submission.orphan_key is not None:
        await run_in_threadpool(storage.delete, submission.orphan_key)
    if submission.send:
        await run_in_threadpool(_send, request.app.state.sessions, producer, submission.job.id)
    response.headers["Location"] = f"/v1/jobs/{submission.job.id}"
    if submission.duplicate:
        response.status_code = status.HTTP_200_OK
    return job_out(submission.job, duplicate=submission.duplicate)


def _send(sessions: sessionmaker[Session], producer: Any, job_id: uuid.UUID) -> None:
    """The job is committed: whatever happens to its wake-up message, the upload was accepted."""
    try:
        jobs.send_jobs(sessions, lambda job: enqueue_index_video(producer, job), [job_id])
    except Exception as exc:
        if not reason_for(exc).retryable:
            raise
        # Unsent (broker down) or sent but not marked (database busy): the reaper sends it, and a
        # second message for a job is harmless.
        log.error("job %s: wake-up left for the reaper: %s", job_id, exc)


def _register(
    session: Session,
    settings: Settings,
    *,
    caller: Principal,
    idempotency_key: str | None,
    options: IndexOptions,
    model: ModelVersion,
    video: jobs.VideoSpec,
) -> jobs.Submission:
    """The video and its job for ``model`` (a served version), in one transaction, in the caller's
    tenant; a known idempotency key answers its job (same request) or 422 (another one)."""
    fingerprint = request_fingerprint(video.sha256 or video.source_uri or "", options)
    with session.begin():
        if idempotency_key is not None:
            known = session.get(IdempotencyKey, (caller.key_id, idempotency_key))
            if known is not None:
                return _replay(session, known, fingerprint, video.storage_key)
        submission = jobs.submit(
            session=session,
            video=video,
            model=model,
            options=options.to_job_options(),
            tenant_id=caller.tenant_id,
        )
        if idempotency_key is not None:
            session.execute(
                dialect_insert(session, IdempotencyKey)
                .values(
                    api_key_id=caller.key_id,
                    key=idempotency_key,
                    fingerprint=fingerprint,
                    job_id=submission.job.id,
                )
                .on_conflict_do_nothing()
            )
        return submission


def _served_model(session: Session, settings: Settings, requested: str | None) -> ModelVersion:
    """The served version to index with, read before any bytes are stored (the read ends here: no
    connection is held while the upload streams)."""
    try:
        return resolve_model(session, settings, requested)
    finally:
        end_read(session)


def request_fingerprint(content: str, options: IndexOptions) -> str:
    """What an idempotency key is bound to: the bytes' digest (or the source URI) and the options."""
    canonical = json.dumps({"content": content, "options": options.to_job_options()}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(
    session: Session, known: IdempotencyKey, fingerprint: str, storage_key: str | None
) -> jobs.Submission:
    if known.fingerprint is not None and known.fingerprint != fingerprint:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("header", "idempotency-key"),
                    "msg": "this Idempotency-Key was used with a different request",
                    "input": known.key,
                }
            ]
        )
    job = session.get_one(Job, known.job_id)
    video = session.get_one(Video, job.video_id)
    orphan = storage_key if storage_key is not None and storage_key != video.storage_key else None
    return jobs.Submission(job, video, False, True, False, False, orphan)


def _parse_options(data: dict[str, Any]) -> IndexOptions:
    try:
        return IndexOptions.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc


def _check_webhook(options: IndexOptions, settings: Settings) -> None:
    if options.webhook_url is None:
        return
    url = str(options.webhook_url)
    problem = (
        "webhooks are disabled: the server has no TSMINDEX_WEBHOOK_SECRET"
        if settings.webhook_secret is None
        else webhooks.precheck(url, webhooks.policy_of(settings))
    )
    if problem is not None:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "webhook_url"),
                    "msg": problem,
                    "input": redact_url(url),
                }
            ]
        )


def _too_large(limit: int) -> HTTPException:
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"uploads are limited to {limit} bytes")


def _missing_file() -> RequestValidationError:
    return RequestValidationError(
        [{"type": "missing", "loc": ("body", "file"), "msg": "a file part is required", "input": None}]
    )


async def _accept_upload(
    request: Request,
    session: Session,
    settings: Settings,
    storage: StorageDep,
    caller: Principal,
    idempotency_key: str | None,
) -> jobs.Submission:
    # Starlette spools the file part to a temporary file on disk past 1 MB, never whole in memory;
    # the guard has already cut off a body longer than the upload limit allows.
    form = await request.form(max_files=1, max_fields=len(OPTION_FIELDS) + 6)
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
            _served_model, session, settings, requested if isinstance(requested, str) and requested else None
        )
        if not isinstance(upload, UploadFile):
            raise _missing_file()
        head = await upload.read(SNIFF_BYTES)
        await upload.seek(0)
        if not looks_like_video(head):
            raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "the upload is not a video file")
        try:
            stored = await run_in_threadpool(
                storage.put_stream,
                f"uploads/{uuid.uuid4()}",
                upload.file,
                max_bytes=settings.max_upload_bytes,
            )
        except UploadTooLargeError as exc:
            raise _too_large(exc.limit) from exc
        metrics.UPLOADED_BYTES.inc(stored.size_bytes)
        spec = jobs.VideoSpec(
            sha256=stored.sha256,
            storage_key=stored.key,
            size_bytes=stored.size_bytes,
            filename=upload.filename,
            content_type=upload.content_type,
        )
        try:
            return await run_in_threadpool(
                lambda: _register(
                    session,
                    settings,
                    caller=caller,
                    idempotency_key=idempotency_key,
                    options=options,
                    model=model,
                    video=spec,
                )
            )
        except Exception:
            await run_in_threadpool(storage.delete, stored.key)  # nothing refers to these bytes
            raise
    finally:
        await form.close()


async def _accept_source(
    request: Request,
    session: Session,
    settings: Settings,
    s3: Any,
    caller: Principal,
    idempotency_key: str | None,
) -> jobs.Submission:
    body = await request.body()  # at most max_json_bytes: the guard counts it as it streams
    try:
        source = SourceRequest.model_validate_json(body)
    except ValidationError as exc:
        # The same "loc" as FastAPI's own body errors, and no "input": it may not even be UTF-8.
        errors = [
            {**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False, include_input=False)
        ]
        raise RequestValidationError(errors) from exc
    _check_webhook(source, settings)
    # Before any S3 call: a refusal says nothing about whether the object exists.
    await run_in_threadpool(lambda: check_allowed(session, settings, caller, source.source_uri))
    model = await run_in_threadpool(_served_model, session, settings, source.model)
    version = await run_in_threadpool(_source_version, s3, source.source_uri)
    spec = jobs.VideoSpec(source_uri=source.source_uri, source_etag=version.etag or None)
    return await run_in_threadpool(
        lambda: _register(
            session,
            settings,
            caller=caller,
            idempotency_key=idempotency_key,
            options=source,
            model=model,
            video=spec,
        )
    )


def _source_version(s3: Any, uri: str) -> ObjectVersion:
    """HEAD the source: a missing or unreadable object is the caller's to fix, now rather than as a
    failed job later; its ETag tells a changed object from the one already indexed. A storage
    outage answers 503 (the app's handler for retryable errors)."""
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
