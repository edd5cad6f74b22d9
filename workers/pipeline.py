"""The indexing pipeline, shared by the Celery task and embedded mode.

``index_video(job_id, ctx)`` re-reads the job, fetches the bytes, samples one clip per window,
classifies the clips, averages window probabilities into video-level labels and stores every label
in one transaction keyed by unique constraints (a redelivered job upserts the same rows), then fires
the job's webhook. The job row is the only state: anything may crash between two steps.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import delete, tuple_
from sqlalchemy.exc import OperationalError as SQLAlchemyOperationalError
from sqlalchemy.orm import Session, sessionmaker

from services.core import metrics
from services.core.config import Settings
from services.core.db import create_db_engine, session_factory
from services.core.models import IndexedWindow, Job, JobStatus, LabelSegment, Video, VideoLabel, WindowLabel
from services.core.security import sign_body
from services.core.storage import (
    ObjectAccessDeniedError,
    ObjectNotFoundError,
    ObjectStorage,
    StorageError,
    download_s3_object,
    file_uri_path,
    make_storage,
    parse_s3_uri,
    s3_client,
    s3_object_version,
    sha256_file,
)
from services.core.thumbnails import store_thumbnail
from services.core.vectors import ModelKey, to_fp16, vector_store
from services.core.windows import (
    ScoredWindow,
    indexed_window_rows,
    label_segments,
    label_stats,
    video_label_rows,
    window_label_rows,
)
from workers.inference import ClipClassifier, ClipPrediction, InferenceError
from workers.media.errors import MediaError, TooLargeError

log = logging.getLogger(__name__)

INFER_CHUNK = 32  # clips per classify() call: enough in flight to fill two batches of 16
SIGNATURE_HEADER = "X-Tsmindex-Signature"


class TransientJobError(Exception):
    """The job failed for a reason that may pass (a server down); the task retries it."""


@dataclass(frozen=True)
class JobOptions:
    window_s: float
    top_k: int
    min_score: float
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    webhook_url: str | None = None

    @classmethod
    def from_job(cls, options: dict[str, Any], settings: Settings) -> JobOptions:
        return cls(
            window_s=float(options.get("window_s") or settings.window_s),
            top_k=int(options.get("top_k") or settings.top_k),
            min_score=float(settings.min_score if options.get("min_score") is None else options["min_score"]),
            include=tuple(options.get("include") or ()),
            exclude=tuple(options.get("exclude") or ()),
            webhook_url=options.get("webhook_url"),
        )

    def keeps(self, label: str) -> bool:
        return (not self.include or label in self.include) and label not in self.exclude


@dataclass(frozen=True)
class JobResult:
    job_id: uuid.UUID
    status: str
    reason: str | None = None
    detail: str | None = None


@dataclass
class PipelineContext:
    """What a pipeline run needs; built once per process (worker init or CLI command)."""

    settings: Settings
    sessions: sessionmaker[Session]
    storage: ObjectStorage
    classifier: ClipClassifier
    on_progress: Callable[[uuid.UUID, float], None] | None = None
    _s3: Any = field(default=None, repr=False)

    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = s3_client(self.settings)
        return self._s3

    def close(self) -> None:
        self.classifier.close()
        bind = self.sessions.kw.get("bind")
        if bind is not None:
            bind.dispose()


def utcnow() -> datetime:
    return datetime.now(UTC)


@contextmanager
def _stage(name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        metrics.STAGE_SECONDS.labels(name).observe(time.perf_counter() - start)


def index_video(job_id: uuid.UUID | str, ctx: PipelineContext) -> JobResult:
    """Run one job to a final state; raises ``TransientJobError`` when it should be retried."""
    job_uuid = uuid.UUID(str(job_id))
    settings = ctx.settings
    with ctx.sessions.begin() as session:
        job = session.get(Job, job_uuid, with_for_update=True)
        if job is None:
            return JobResult(job_uuid, "missing")
        if job.status in (JobStatus.succeeded, JobStatus.failed):
            # A redelivered message for a job already finished: nothing to do.
            return JobResult(job_uuid, job.status, job.reason, job.detail)
        job.attempts += 1
        if job.attempts > settings.job_max_attempts:
            # The previous attempts died without recording an outcome (a crashed worker): poison.
            _set_failed(job, "too_many_attempts", f"gave up after {settings.job_max_attempts} attempts")
            result = JobResult(job_uuid, job.status, job.reason, job.detail)
            payload = _webhook_payload(job, [])
            options = JobOptions.from_job(job.options, settings)
        else:
            job.status = JobStatus.running
            job.started_at = utcnow()
            job.progress = 0.0
            result = None
            video = session.get_one(Video, job.video_id)
            snapshot = _JobSnapshot(
                job_id=job_uuid,
                video_id=video.id,
                model_name=job.model_name,
                model_version=job.model_version,
                options=JobOptions.from_job(job.options, settings),
                storage_key=video.storage_key,
                source_uri=video.source_uri,
                sha256=video.sha256,
                attempts=job.attempts,
                created_at=job.created_at,
            )
    if result is not None:
        metrics.VIDEOS_INDEXED.labels("failed").inc()
        metrics.JOB_ERRORS.labels("too_many_attempts").inc()
        _fire_webhook(ctx, options.webhook_url, payload)
        return result

    try:
        result = _run(snapshot, ctx)
    except MediaError as exc:
        result = _finish_failed(ctx, snapshot, exc.reason, str(exc))
    except InferenceError as exc:
        if exc.permanent:
            result = _finish_failed(ctx, snapshot, f"inference_{exc.reason or 'rejected'}", str(exc))
        else:
            result = _transient(ctx, snapshot, "inference_unavailable", exc)
    except ObjectNotFoundError as exc:
        result = _finish_failed(ctx, snapshot, "source_missing", str(exc))
    except ObjectAccessDeniedError as exc:
        result = _finish_failed(ctx, snapshot, "access_denied", str(exc))
    except StorageError as exc:
        result = _transient(ctx, snapshot, "storage_unavailable", exc)
    except SQLAlchemyOperationalError as exc:
        # The database went away mid-job: the job row cannot be updated now; the retry will.
        raise TransientJobError(f"database_unavailable: {exc}") from exc
    except SoftTimeLimitExceeded:
        _finish_failed(ctx, snapshot, "time_limit", f"the job ran past {ctx.settings.job_time_limit_s:g} s")
        raise
    except Exception as exc:
        # A defect: record it on the job (a late-acked task that raises is not redelivered, so the
        # row would otherwise stay "running" for ever), then let the task fail loudly.
        _finish_failed(ctx, snapshot, "internal_error", f"{type(exc).__name__}: {exc}")
        raise
    return result


@dataclass(frozen=True)
class _JobSnapshot:
    job_id: uuid.UUID
    video_id: uuid.UUID
    model_name: str
    model_version: str
    options: JobOptions
    storage_key: str | None
    source_uri: str | None
    sha256: str | None
    attempts: int
    created_at: datetime


@dataclass
class _Inferred:
    """What the model said about a video's windows, kept while its clips stream past."""

    windows: list[ScoredWindow] = field(default_factory=list)
    embeddings: dict[int, Any] = field(default_factory=dict)  # window index -> fp16 vector
    thumbnails: dict[int, str] = field(default_factory=dict)  # window index -> storage key


def _run(job: _JobSnapshot, ctx: PipelineContext) -> JobResult:
    from workers.media import open_clips
    from workers.media.limits import MediaLimits

    s = ctx.settings
    limits = MediaLimits(
        max_pixels_per_frame=s.max_pixels_per_frame,
        max_duration_s=s.max_duration_s,
        max_upload_bytes=s.max_upload_bytes,
        decode_budget_s=s.decode_budget_s,
    )
    with tempfile.TemporaryDirectory(prefix="tsmindex-") as tmp:
        with _stage("fetch"):
            path, etag = _fetch(job, ctx, Path(tmp))
        # An S3 object may have changed since an earlier run: hash what was read this time.
        sha256 = sha256_file(path) if etag is not None or job.sha256 is None else job.sha256
        size_bytes = path.stat().st_size
        with open_clips(
            path,
            num_segments=s.num_segments,
            window_s=job.options.window_s,
            max_windows=s.max_windows,
            resize=s.clip_resize,
            crop=s.clip_crop,
            limits=limits,
            budget_s=s.decode_budget_s,
        ) as stream:
            inferred = _Inferred()
            for clips in _timed_chunks(stream.chunks(s.clip_chunk_windows)):
                mismatch = _infer_chunk(ctx, job, clips, inferred, planned=len(stream.windows))
                if mismatch is not None:
                    return mismatch
            sampled = stream.finish(len(inferred.windows))
    metrics.CLIPS_INFERRED.inc(len(inferred.windows))
    with _stage("store"):
        result, payload = _store(ctx, job, sampled, sha256, size_bytes, etag, inferred)
    _fire_webhook(ctx, job.options.webhook_url, payload)
    return result


def _timed_chunks(chunks: Iterator[list[Any]]) -> Iterator[list[Any]]:
    """The chunks of a clip stream, the time spent decoding each counted as the decode stage."""
    while True:
        with _stage("decode"):
            chunk = next(chunks, None)
        if chunk is None:
            return
        yield chunk


def _infer_chunk(
    ctx: PipelineContext, job: _JobSnapshot, clips: Sequence[Any], inferred: _Inferred, *, planned: int
) -> JobResult | None:
    """Classify and embed one chunk of clips, write their thumbnails; a result when the job must
    stop (the backend runs another model version)."""
    s = ctx.settings
    with _stage("inference"):
        predictions: list[ClipPrediction] = []
        for start in range(0, len(clips), INFER_CHUNK):
            batch = [clip.frames for clip in clips[start : start + INFER_CHUNK]]
            predictions += ctx.classifier.classify(batch, top_k=s.window_top_k, with_embedding=True)
    for prediction in predictions[:1]:
        # Labels are stored under the job's model version: they must come from that version.
        if prediction.model_version != job.model_version:
            return _finish_failed(
                ctx,
                job,
                "model_mismatch",
                f"job expects model version {job.model_version!r}, the backend runs "
                f"{prediction.model_name}:{prediction.model_version}",
            )
    for clip, pred in zip(clips, predictions, strict=True):
        index = len(inferred.windows)
        labels = [(p.label, p.index, p.score) for p in pred.labels]
        inferred.windows.append(ScoredWindow(index, clip.start_ms, clip.end_ms, labels))
        if pred.embedding is not None:
            inferred.embeddings[index] = to_fp16(pred.embedding)
        if s.thumbnails:
            inferred.thumbnails[index] = store_thumbnail(
                ctx.storage, job_id=job.job_id, window_index=index, frames=clip.frames
            )
    _report_progress(ctx, job.job_id, len(inferred.windows) / max(planned, 1))
    return None


def _fetch(job: _JobSnapshot, ctx: PipelineContext, tmp: Path) -> tuple[Path, str | None]:
    """The video as a local file, and for an S3 source the ETag of the version read."""
    if job.storage_key:
        dest = tmp / "video"
        ctx.storage.download(job.storage_key, dest)
        return dest, None
    uri = job.source_uri or ""
    if uri.startswith("file://"):
        path = file_uri_path(uri)
        if not path.is_file():
            raise ObjectNotFoundError(uri)
        return path, None  # embedded mode reads the user's file where it is
    if uri.startswith("s3://"):
        bucket, key = parse_s3_uri(uri)
        # Refuse an oversized object before paying for its download.
        version = s3_object_version(ctx.s3(), bucket, key)
        if version.size_bytes > ctx.settings.max_upload_bytes:
            raise TooLargeError(
                f"{uri} is {version.size_bytes} bytes; the limit is {ctx.settings.max_upload_bytes}"
            )
        dest = tmp / "video"
        # The version that was sized, even if the object is replaced in between (then: retried).
        download_s3_object(ctx.s3(), bucket, key, dest, etag=version.etag or None)
        return dest, version.etag or None
    raise ObjectNotFoundError(f"job {job.job_id} has no readable source ({uri!r})")


def _report_progress(ctx: PipelineContext, job_id: uuid.UUID, fraction: float) -> None:
    with ctx.sessions.begin() as session:
        job = session.get(Job, job_id)
        if job is not None and job.status == JobStatus.running:
            job.progress = round(fraction, 4)
    if ctx.on_progress is not None:
        ctx.on_progress(job_id, fraction)


def _store(
    ctx: PipelineContext,
    job: _JobSnapshot,
    sampled: Any,
    sha256: str,
    size_bytes: int,
    source_etag: str | None,
    inferred: _Inferred,
) -> tuple[JobResult, dict[str, Any]]:
    info = sampled.info
    options = job.options
    key = {"video_id": job.video_id, "model_name": job.model_name, "model_version": job.model_version}
    video_rows = video_label_rows(label_stats(inferred.windows, options), key)
    window_rows = window_label_rows(inferred.windows, options, key)
    segment_rows = [{**key, **segment} for segment in label_segments(window_rows)]
    indexed_rows = indexed_window_rows(inferred.windows, inferred.thumbnails, key)
    with ctx.sessions.begin() as session:
        job_row = session.get_one(Job, job.job_id, with_for_update=True)
        if job_row.status != JobStatus.running:
            # Another delivery of the same job finished first; its labels stand.
            return JobResult(job.job_id, job_row.status, job_row.reason, job_row.detail), {}
        video = session.get_one(Video, job.video_id)
        video.duration_s = float(info.duration_s)
        video.fps = float(info.fps)
        video.width = int(info.width)
        video.height = int(info.height)
        video.codec = str(info.codec)
        video.size_bytes = size_bytes
        if source_etag is not None:
            video.source_etag = source_etag
        if video.sha256 != sha256:
            # Content hashes are unique: bytes another video already has leave this one without.
            taken = session.query(Video.id).filter(Video.sha256 == sha256, Video.id != video.id).first()
            video.sha256 = None if taken else sha256
        _upsert(session, VideoLabel, video_rows, ["video_id", "model_name", "model_version", "label"])
        _upsert(
            session,
            WindowLabel,
            window_rows,
            ["video_id", "model_name", "model_version", "window_index", "label"],
        )
        _upsert(
            session,
            LabelSegment,
            segment_rows,
            ["video_id", "model_name", "model_version", "label", "start_ms"],
        )
        # Rows a previous delivery stored that this one did not produce (e.g. changed options).
        _delete_stale(session, VideoLabel, key, [(r["label"],) for r in video_rows], ("label",))
        _delete_stale(
            session,
            WindowLabel,
            key,
            [(r["window_index"], r["label"]) for r in window_rows],
            ("window_index", "label"),
        )
        _delete_stale(
            session,
            LabelSegment,
            key,
            [(r["label"], r["start_ms"]) for r in segment_rows],
            ("label", "start_ms"),
        )
        _upsert(
            session,
            IndexedWindow,
            indexed_rows,
            ["video_id", "model_name", "model_version", "window_index"],
        )
        _delete_stale(
            session, IndexedWindow, key, [(r["window_index"],) for r in indexed_rows], ("window_index",)
        )
        vector_store(session).write(
            session,
            model=ModelKey(job.model_name, job.model_version),
            video_id=job.video_id,
            vectors=inferred.embeddings,
        )
        coverage = sampled.coverage
        job_row.covered_s = coverage.covered_s if coverage is not None else None
        job_row.truncated = bool(coverage is not None and coverage.truncated)
        job_row.status = JobStatus.succeeded
        job_row.reason = None
        job_row.detail = None
        job_row.progress = 1.0
        job_row.finished_at = utcnow()
        payload = _webhook_payload(job_row, [r for r in video_rows if r["rank"] <= options.top_k])
    metrics.VIDEOS_INDEXED.labels("succeeded").inc()
    created = job.created_at if job.created_at.tzinfo else job.created_at.replace(tzinfo=UTC)
    metrics.INDEX_LATENCY_SECONDS.observe((utcnow() - created).total_seconds())
    return JobResult(job.job_id, JobStatus.succeeded), payload


def _upsert(
    session: Session,
    table: type[VideoLabel] | type[WindowLabel] | type[LabelSegment] | type[IndexedWindow],
    rows: list[dict[str, Any]],
    keys: list[str],
) -> None:
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        pg = postgresql.insert(table)
        updates = {c: pg.excluded[c] for c in rows[0] if c not in keys}
        session.execute(pg.on_conflict_do_update(index_elements=keys, set_=updates), rows)
    elif dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        lite = sqlite.insert(table)
        updates = {c: lite.excluded[c] for c in rows[0] if c not in keys}
        session.execute(lite.on_conflict_do_update(index_elements=keys, set_=updates), rows)
    else:
        raise RuntimeError(f"unsupported database dialect {dialect!r}")


def _delete_stale(
    session: Session,
    table: type[VideoLabel] | type[WindowLabel] | type[LabelSegment] | type[IndexedWindow],
    key: dict[str, Any],
    kept: list[tuple[Any, ...]],
    columns: tuple[str, ...],
) -> None:
    stmt = delete(table).where(*(getattr(table, k) == v for k, v in key.items()))
    if kept:
        stmt = stmt.where(tuple_(*(getattr(table, c) for c in columns)).not_in(kept))
    session.execute(stmt)


def _set_failed(job: Job, reason: str, detail: str) -> None:
    job.status = JobStatus.failed
    job.reason = reason
    job.detail = detail[:2000]
    job.finished_at = utcnow()


def _finish_failed(ctx: PipelineContext, job: _JobSnapshot, reason: str, detail: str) -> JobResult:
    with ctx.sessions.begin() as session:
        row = session.get_one(Job, job.job_id, with_for_update=True)
        if row.status != JobStatus.running:
            return JobResult(job.job_id, row.status, row.reason, row.detail)
        _set_failed(row, reason, detail)
        payload = _webhook_payload(row, [])
    log.info("job %s failed: %s (%s)", job.job_id, reason, detail)
    metrics.VIDEOS_INDEXED.labels("failed").inc()
    metrics.JOB_ERRORS.labels(reason).inc()
    _fire_webhook(ctx, job.options.webhook_url, payload)
    return JobResult(job.job_id, JobStatus.failed, reason, detail[:2000])


def _transient(ctx: PipelineContext, job: _JobSnapshot, reason: str, exc: Exception) -> JobResult:
    if job.attempts >= ctx.settings.job_max_attempts:
        return _finish_failed(ctx, job, reason, f"{exc} (after {job.attempts} attempts)")
    with ctx.sessions.begin() as session:
        row = session.get_one(Job, job.job_id)
        if row.status == JobStatus.running:
            row.status = JobStatus.queued
            row.reason = reason
            row.detail = str(exc)[:2000]
    metrics.JOB_ERRORS.labels(reason).inc()
    raise TransientJobError(f"{reason}: {exc}") from exc


def _webhook_payload(job: Job, labels: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "job_id": str(job.id),
        "video_id": str(job.video_id),
        "status": str(job.status),
        "reason": job.reason,
        "model": {"name": job.model_name, "version": job.model_version},
        "labels": [{"label": r["label"], "score": r["score"]} for r in labels],
    }


def _fire_webhook(ctx: PipelineContext, url: str | None, payload: dict[str, Any]) -> None:
    if not url or not payload:
        return
    secret = ctx.settings.webhook_secret
    if secret is None:
        log.warning("webhook %s not sent: TSMINDEX_WEBHOOK_SECRET is not set", url)
        return
    deliver_webhook(
        url,
        payload,
        secret=secret.get_secret_value(),
        attempts=ctx.settings.webhook_attempts,
        timeout_s=ctx.settings.io_timeout_s,
    )


def deliver_webhook(
    url: str, payload: dict[str, Any], *, secret: str, attempts: int, timeout_s: float, backoff_s: float = 0.5
) -> bool:
    """POST the HMAC-signed JSON body; retries transport errors and 5xx with backoff."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign_body(body, secret)}
    for attempt in range(1, attempts + 1):
        try:
            response = httpx.post(url, content=body, headers=headers, timeout=timeout_s)
        except httpx.HTTPError as exc:
            log.warning("webhook %s attempt %d: %s", url, attempt, exc)
        else:
            if response.is_success:
                return True
            log.warning("webhook %s attempt %d: HTTP %d", url, attempt, response.status_code)
            if response.status_code < 500 and response.status_code != 429:
                return False
        if attempt < attempts:
            time.sleep(backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
    return False


def build_classifier(settings: Settings) -> ClipClassifier:
    from workers.inference import InProcessEngine, TorchServeClient

    if settings.inference_backend == "torchserve":
        return TorchServeClient(settings)
    if settings.inference_backend == "inprocess":
        if settings.checkpoint_path is None:
            raise ValueError("in-process inference needs TSMINDEX_CHECKPOINT_PATH")
        return InProcessEngine.from_checkpoint(settings.checkpoint_path)
    raise ValueError(f"unknown inference backend {settings.inference_backend!r}")


def build_context(settings: Settings, *, classifier: ClipClassifier | None = None) -> PipelineContext:
    """Engine, sessions, storage and inference backend for one process."""
    engine = create_db_engine(settings.resolved_database_url)
    return PipelineContext(
        settings=settings,
        sessions=session_factory(engine),
        storage=make_storage(settings),
        classifier=classifier or build_classifier(settings),
    )
