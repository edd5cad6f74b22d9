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
from collections import defaultdict
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
from services.core.models import Job, JobStatus, LabelSegment, Video, VideoLabel, WindowLabel
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


@dataclass(frozen=True)
class Window:
    index: int
    start_ms: int
    end_ms: int
    labels: list[tuple[str, int, float]]  # (label, index, score), best first


def utcnow() -> datetime:
    return datetime.now(UTC)


@contextmanager
def _stage(name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        metrics.STAGE_SECONDS.labels(name).observe(time.perf_counter() - start)


def aggregate(windows: Sequence[Window]) -> list[tuple[str, int, float]]:
    """Video-level labels: the mean over windows of each label's probability, best first.

    A window reports only its top labels; a label outside them counts as 0 for that window.
    """
    totals: dict[tuple[str, int], float] = defaultdict(float)
    for window in windows:
        for label, index, score in window.labels:
            totals[(label, index)] += score
    n = max(len(windows), 1)
    ranked = sorted(((label, index, total / n) for (label, index), total in totals.items()), key=_rank_key)
    return ranked


def label_segments(window_rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of consecutive windows that each keep the same label (window rows as ``_store`` writes
    them): label, label_index, start_ms, end_ms, windows, score (the best window's) and mean_score."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(window_rows, key=lambda r: int(r["window_index"])):
        by_label.setdefault(row["label"], []).append(row)
    runs: list[list[dict[str, Any]]] = []
    for rows in by_label.values():
        runs.append([rows[0]])
        for row in rows[1:]:
            if row["window_index"] == runs[-1][-1]["window_index"] + 1:
                runs[-1].append(row)
            else:
                runs.append([row])
    return [
        {
            "label": run[0]["label"],
            "label_index": run[0]["label_index"],
            "start_ms": run[0]["start_ms"],
            "end_ms": run[-1]["end_ms"],
            "windows": len(run),
            "score": max(r["score"] for r in run),
            "mean_score": sum(r["score"] for r in run) / len(run),
        }
        for run in runs
    ]


def _rank_key(item: tuple[str, int, float]) -> tuple[float, int]:
    return (-item[2], item[1])


def select_labels(
    labels: Sequence[tuple[str, int, float]], options: JobOptions
) -> list[tuple[str, int, float]]:
    kept = [item for item in labels if options.keeps(item[0]) and item[2] >= options.min_score]
    return sorted(kept, key=_rank_key)[: options.top_k]


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


def _run(job: _JobSnapshot, ctx: PipelineContext) -> JobResult:
    from workers.media import sample_clips
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
        with _stage("decode"):
            sampled = sample_clips(
                path,
                num_segments=s.num_segments,
                window_s=job.options.window_s,
                max_windows=s.max_windows,
                resize=s.clip_resize,
                crop=s.clip_crop,
                limits=limits,
                budget_s=s.decode_budget_s,
                device=s.decode_device,
            )
    clips = [clip.frames for clip in sampled.clips]
    predictions: list[ClipPrediction] = []
    with _stage("inference"):
        for start in range(0, len(clips), INFER_CHUNK):
            predictions += ctx.classifier.classify(clips[start : start + INFER_CHUNK], top_k=s.window_top_k)
            _report_progress(ctx, job.job_id, len(predictions) / max(len(clips), 1))
    metrics.CLIPS_INFERRED.inc(len(predictions))
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
    windows = [
        Window(i, clip.start_ms, clip.end_ms, [(p.label, p.index, p.score) for p in pred.labels])
        for i, (clip, pred) in enumerate(zip(sampled.clips, predictions, strict=True))
    ]
    video_labels = select_labels(aggregate(windows), job.options)
    with _stage("store"):
        result, payload = _store(ctx, job, sampled.info, sha256, size_bytes, etag, windows, video_labels)
    _fire_webhook(ctx, job.options.webhook_url, payload)
    return result


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
    info: Any,
    sha256: str,
    size_bytes: int,
    source_etag: str | None,
    windows: Sequence[Window],
    video_labels: Sequence[tuple[str, int, float]],
) -> tuple[JobResult, dict[str, Any]]:
    options = job.options
    key = {"video_id": job.video_id, "model_name": job.model_name, "model_version": job.model_version}
    video_rows = [
        {**key, "label": label, "label_index": index, "score": score, "rank": rank}
        for rank, (label, index, score) in enumerate(video_labels, start=1)
    ]
    window_rows = [
        {
            **key,
            "window_index": w.index,
            "start_ms": w.start_ms,
            "end_ms": w.end_ms,
            "label": label,
            "label_index": index,
            "score": score,
            "rank": rank,
        }
        for w in windows
        for rank, (label, index, score) in enumerate(select_labels(w.labels, options), start=1)
    ]
    segment_rows = [{**key, **segment} for segment in label_segments(window_rows)]
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
        job_row.status = JobStatus.succeeded
        job_row.reason = None
        job_row.detail = None
        job_row.progress = 1.0
        job_row.finished_at = utcnow()
        payload = _webhook_payload(job_row, video_rows)
    metrics.VIDEOS_INDEXED.labels("succeeded").inc()
    created = job.created_at if job.created_at.tzinfo else job.created_at.replace(tzinfo=UTC)
    metrics.INDEX_LATENCY_SECONDS.observe((utcnow() - created).total_seconds())
    return JobResult(job.job_id, JobStatus.succeeded), payload


def _upsert(
    session: Session,
    table: type[VideoLabel] | type[WindowLabel] | type[LabelSegment],
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
    table: type[VideoLabel] | type[WindowLabel] | type[LabelSegment],
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
        return InProcessEngine.from_settings(settings)
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
