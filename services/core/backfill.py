"""Bulk S3 backfill: list a bucket prefix and turn each object into one idempotent index job.

An object is keyed by (bucket, key, ETag, model name, model version) in ``source_objects``; that
unique key makes re-runs and overlapping prefixes enqueue nothing twice, and a changed object (new
ETag) is indexed again. The listing cursor (the last key whose outcome is stored) and the counts
change in the same transaction as the jobs, so a runner killed at any point resumes exactly where it
stopped. Job ids are sent to the broker after that commit and marked sent afterwards; a resumed
runner re-sends the unmarked ones (a duplicate message is harmless: the task is idempotent).
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from services.core import served
from services.core.config import Settings
from services.core.models import (
    Backfill,
    Job,
    JobStatus,
    LabelSegment,
    SourceObject,
    Video,
    VideoLabel,
    WindowLabel,
    label_rows,
)
from services.core.versions import ModelVersion

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (
    "3gp", "avi", "flv", "m2ts", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "mts", "ogv", "ts", "webm", "wmv",
)  # fmt: skip
BATCH_OBJECTS = 200  # objects per transaction: bounds a transaction and the overshoot past the cap
FAILURE_SAMPLE = 100


class BackfillStatus(StrEnum):
    listing = "listing"
    indexing = "indexing"  # listing done; jobs still queued or running
    completed = "completed"
    cancelled = "cancelled"
    failed = "failed"  # the listing itself failed (no such bucket, access denied)


ACTIVE = (BackfillStatus.listing, BackfillStatus.indexing)


class BackfillKind(StrEnum):
    s3 = "s3"  # the objects under an S3 prefix
    reindex = "reindex"  # indexed videos (services.core.reindex) for another model version


class RunOutcome(StrEnum):
    listed = "listed"  # every object has a job or a reason to be skipped
    throttled = "throttled"  # the queue is at its cap; run again later (non-blocking runs)
    busy = "busy"  # another runner holds this backfill
    stopped = "stopped"  # cancelled, failed or already done


class BackfillError(Exception):
    """A request for a backfill that cannot be served (bad URI, no such backfill)."""


@dataclass(frozen=True)
class ListedObject:
    key: str
    etag: str
    size: int
    last_modified: datetime | None


@dataclass(frozen=True)
class BackfillFilters:
    """Which listed objects become jobs; the others are counted as skipped."""

    extensions: tuple[str, ...] | None = VIDEO_EXTENSIONS  # None: every extension
    min_size: int = 1
    max_size: int | None = None
    modified_since: datetime | None = None

    def accepts(self, obj: ListedObject) -> bool:
        if obj.key.endswith("/") or obj.size < self.min_size:
            return False  # folder markers and empty objects
        if self.max_size is not None and obj.size > self.max_size:
            return False
        if self.modified_since is not None and (
            obj.last_modified is None or obj.last_modified < self.modified_since
        ):
            return False
        if self.extensions is None:
            return True
        ext = posixpath.splitext(obj.key)[1].lstrip(".").lower()
        return ext in self.extensions

    def to_dict(self) -> dict[str, Any]:
        return {
            "extensions": list(self.extensions) if self.extensions is not None else None,
            "min_size": self.min_size,
            "max_size": self.max_size,
            "modified_since": self.modified_since.isoformat() if self.modified_since else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackfillFilters:
        exts = d.get("extensions", list(VIDEO_EXTENSIONS))
        since = d.get("modified_since")
        return cls(
            extensions=tuple(e.lower().lstrip(".") for e in exts) if exts is not None else None,
            min_size=int(d.get("min_size", 1)),
            max_size=int(d["max_size"]) if d.get("max_size") is not None else None,
            modified_since=as_utc(datetime.fromisoformat(since)) if since else None,
        )


@dataclass(frozen=True)
class BackfillCounts:
    listed: int
    skipped: int
    queued: int
    succeeded: int
    failed: int

    @property
    def pending(self) -> int:
        return self.queued - self.succeeded - self.failed


@dataclass(frozen=True)
class ObjectFailure:
    key: str
    reason: str | None
    detail: str | None


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def parse_prefix_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix); the prefix may be empty (the whole bucket)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise BackfillError(f"not an s3://bucket/prefix URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def create_backfill(
    session: Session,
    settings: Settings,
    *,
    source_uri: str,
    filters: BackfillFilters,
    options: dict[str, Any] | None = None,
    output_uri: str | None = None,
    model: ModelVersion | None = None,
) -> Backfill:
    """A new backfill row for ``model`` (default: the served default, ``served.resolve``)."""
    model = model or served.resolve(session, settings)
    bucket, prefix = parse_prefix_uri(source_uri)
    if output_uri is not None:
        parse_prefix_uri(output_uri)
    backfill = Backfill(
        source_uri=f"s3://{bucket}/{prefix}",
        status=BackfillStatus.listing,
        bucket=bucket,
        prefix=prefix,
        model_name=model.name,
        model_version=model.version,
        filters=filters.to_dict(),
        options=options or {},
        output_uri=output_uri,
        objects_listed=0,
        objects_skipped=0,
        jobs_created=0,
        jobs_succeeded=0,
        jobs_failed=0,
        created_at=utcnow(),
        updated_at=utcnow(),
    )
    session.add(backfill)
    session.flush()
    return backfill


def find_interrupted(
    session: Session,
    settings: Settings,
    *,
    source_uri: str,
    filters: BackfillFilters,
    model: ModelVersion | None = None,
) -> Backfill | None:
    """The latest backfill of the same prefix, filters and model whose listing never finished."""
    model = model or served.resolve(session, settings)
    bucket, prefix = parse_prefix_uri(source_uri)
    candidates = session.scalars(
        select(Backfill)
        .where(
            Backfill.bucket == bucket,
            Backfill.prefix == prefix,
            Backfill.model_name == model.name,
            Backfill.model_version == model.version,
            Backfill.status == BackfillStatus.listing,
        )
        .order_by(Backfill.created_at.desc())
    )
    wanted = filters.to_dict()
    return next((b for b in candidates if b.filters == wanted), None)


def _queued_jobs(backfill_id: uuid.UUID) -> Any:
    return (
        select(Job.status, func.count())
        .join(SourceObject, SourceObject.job_id == Job.id)
        .where(SourceObject.backfill_id == backfill_id, SourceObject.outcome == "queued")
        .group_by(Job.status)
    )


@dataclass(frozen=True)
class FinishedJobs:
    succeeded: int
    failed: int


def finished_jobs(session: Session, backfill_id: uuid.UUID) -> FinishedJobs:
    """How many of the backfill's jobs have finished. A scan of its jobs (about 0.75 s at a million
    objects on Postgres): callers run it before locking the backfill row, not while holding it."""
    by_status = dict(session.execute(_queued_jobs(backfill_id)).tuples().all())
    return FinishedJobs(int(by_status.get(JobStatus.succeeded, 0)), int(by_status.get(JobStatus.failed, 0)))


def refresh(session: Session, backfill: Backfill, finished: FinishedJobs | None = None) -> BackfillCounts:
    """Current counts (``finished`` if the caller counted them already); an indexing backfill whose
    jobs have all finished becomes completed, and its counts are frozen from then on."""
    if backfill.status in ACTIVE:
        done = finished or finished_jobs(session, backfill.id)
        backfill.jobs_succeeded, backfill.jobs_failed = done.succeeded, done.failed
        if (
            backfill.status == BackfillStatus.indexing
            and done.succeeded + done.failed >= backfill.jobs_created
        ):
            backfill.status = BackfillStatus.completed
            backfill.finished_at = utcnow()
    return counts_of(backfill)


def counts_of(backfill: Backfill) -> BackfillCounts:
    return BackfillCounts(
        listed=backfill.objects_listed,
        skipped=backfill.objects_skipped,
        queued=backfill.jobs_created,
        succeeded=backfill.jobs_succeeded,
        failed=backfill.jobs_failed,
    )


def failures(
    session: Session, backfill_id: uuid.UUID, *, limit: int = FAILURE_SAMPLE
) -> tuple[dict[str, int], list[ObjectFailure]]:
    """Failed objects of this backfill: counts by reason, and the first ``limit`` of them by key."""
    where = (
        SourceObject.backfill_id == backfill_id,
        SourceObject.outcome == "queued",
        Job.status == JobStatus.failed,
    )
    joined = select(Job.reason, func.count()).join(SourceObject, SourceObject.job_id == Job.id)
    by_reason = {
        str(reason): int(n) for reason, n in session.execute(joined.where(*where).group_by(Job.reason))
    }
    rows = session.execute(
        select(SourceObject.key, Job.reason, Job.detail)
        .join(Job, SourceObject.job_id == Job.id)
        .where(*where)
        .order_by(SourceObject.key)
        .limit(limit)
    )
    return by_reason, [ObjectFailure(key, reason, detail) for key, reason, detail in rows]


def cancel(session: Session, backfill: Backfill) -> None:
    """Stop listing and fail this backfill's jobs that no worker has started."""
    if backfill.status not in ACTIVE:
        return
    refresh(session, backfill)
    if backfill.status not in ACTIVE:
        return
    mine = select(SourceObject.job_id).where(
        SourceObject.backfill_id == backfill.id, SourceObject.outcome == "queued"
    )
    session.execute(
        update(Job)
        .where(Job.id.in_(mine), Job.status == JobStatus.queued, Job.attempts == 0)
        .values(
            status=JobStatus.failed, reason="cancelled", detail="backfill cancelled", finished_at=utcnow()
        )
        .execution_options(synchronize_session=False)
    )
    refresh(session, backfill)
    backfill.status = BackfillStatus.cancelled
    backfill.finished_at = backfill.updated_at = utcnow()


def list_objects(
    s3: Any, bucket: str, prefix: str, *, start_after: str | None, page_size: int
) -> Iterator[list[ListedObject]]:
    """Pages of ``ListObjectsV2`` in key order, starting after ``start_after``."""
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "PaginationConfig": {"PageSize": page_size}}
    if start_after:
        params["StartAfter"] = start_after
    for page in s3.get_paginator("list_objects_v2").paginate(**params):
        yield [
            ListedObject(
                key=item["Key"],
                etag=str(item.get("ETag", "")).strip('"'),
                size=int(item.get("Size", 0)),
                last_modified=as_utc(item["LastModified"]) if item.get("LastModified") else None,
            )
            for item in page.get("Contents", [])
        ]


@dataclass
class BackfillRunner:
    """Lists one backfill's prefix into jobs. The CLI runs it in its own process (blocking while the
    queue is at its cap); the ``backfill_prefix`` task runs it without blocking and reschedules."""

    settings: Settings
    sessions: sessionmaker[Session]
    s3: Any
    send: Callable[[str], None]  # puts one job id on the index queue
    queue_length: Callable[[], int]
    on_progress: Callable[[BackfillCounts], None] | None = None
    sleep: Callable[[float], None] = field(default=time.sleep)

    def run(self, backfill_id: uuid.UUID, *, block: bool = True) -> RunOutcome:
        with self._lock(backfill_id) as held:
            if not held:
                return RunOutcome.busy
            self._resend_unsent(backfill_id)
            return self._list(backfill_id, block=block)

    @contextmanager
    def _lock(self, backfill_id: uuid.UUID) -> Iterator[bool]:
        """One runner per backfill. A Postgres session lock dies with its connection, so the
        backfill of a killed process can be resumed at once; SQLite (one process) needs none."""
        engine: Engine = self.sessions.kw["bind"]
        if engine.dialect.name != "postgresql":
            yield True
            return
        lock_id = (backfill_id.int >> 65) - (1 << 62)  # a signed 64-bit number
        with engine.connect() as conn:
            held = bool(conn.scalar(text("SELECT pg_try_advisory_lock(:id)"), {"id": lock_id}))
            conn.commit()
            try:
                yield held
            finally:
                if held:
                    conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})
                    conn.commit()

    def _resend_unsent(self, backfill_id: uuid.UUID) -> None:
        with self.sessions() as session:
            rows = session.execute(
                select(SourceObject.id, SourceObject.job_id)
                .join(Job, SourceObject.job_id == Job.id)
                .where(
                    SourceObject.backfill_id == backfill_id,
                    SourceObject.outcome == "queued",
                    SourceObject.enqueued_at.is_(None),
                    Job.status == JobStatus.queued,
                )
            ).all()
        self._send([(row_id, job_id) for row_id, job_id in rows])

    def _send(self, rows: Sequence[tuple[int, uuid.UUID]]) -> None:
        for _, job_id in rows:
            self.send(str(job_id))
        if rows:
            with self.sessions.begin() as session:
                session.execute(
                    update(SourceObject)
                    .where(SourceObject.id.in_([row_id for row_id, _ in rows]))
                    .values(enqueued_at=utcnow())
                )

    def _list(self, backfill_id: uuid.UUID, *, block: bool) -> RunOutcome:
        from botocore.exceptions import ClientError

        with self.sessions() as session:
            backfill = session.get(Backfill, backfill_id)
            if backfill is None:
                raise BackfillError(f"no backfill {backfill_id}")
            if backfill.status != BackfillStatus.listing:
                return RunOutcome.stopped
            bucket, prefix, cursor = backfill.bucket, backfill.prefix, backfill.cursor_key
            reindex = backfill.kind == BackfillKind.reindex
            # A reindex's videos are selected by its own filters as they are listed.
            filters = BackfillFilters(None, 0) if reindex else BackfillFilters.from_dict(backfill.filters)
            stored_filters = backfill.filters
        try:
            if reindex:
                from services.core.reindex import ReindexFilters, index_pages

                pages = index_pages(
                    self.sessions,
                    ReindexFilters.from_dict(stored_filters),
                    start_after=cursor,
                    page_size=self.settings.backfill_page_size,
                )
            else:
                pages = list_objects(
                    self.s3, bucket, prefix, start_after=cursor, page_size=self.settings.backfill_page_size
                )
            for page in pages:
                done = 0
                while done < len(page):
                    room = self.settings.backfill_max_queued - self.queue_length()
                    taken = self._take(backfill_id, filters, page[done : done + BATCH_OBJECTS], room)
                    if taken is None:
                        return RunOutcome.stopped
                    if taken == 0:
                        if not block:
                            return RunOutcome.throttled
                        self.sleep(self.settings.backfill_poll_s)
                    done += taken
        except ClientError as exc:
            # The prefix cannot be listed at all (no such bucket, access denied): a permanent failure.
            code = str(exc.response.get("Error", {}).get("Code", "")) or "list_failed"
            with self.sessions.begin() as session:
                row = session.get_one(Backfill, backfill_id, with_for_update=True)
                row.status = BackfillStatus.failed
                row.reason = code[:64]
                row.detail = str(exc)[:2000]
                row.finished_at = row.updated_at = utcnow()
            return RunOutcome.stopped
        with self.sessions.begin() as session:
            row = session.get_one(Backfill, backfill_id, with_for_update=True)
            if row.status == BackfillStatus.listing:
                row.status = BackfillStatus.indexing
                row.listed_at = row.updated_at = utcnow()
                counts = refresh(session, row)
            else:
                counts = counts_of(row)
        if self.on_progress is not None:
            self.on_progress(counts)
        return RunOutcome.listed

    def _take(
        self, backfill_id: uuid.UUID, filters: BackfillFilters, batch: list[ListedObject], room: int
    ) -> int | None:
        """Store the outcome of the longest head of ``batch`` that needs at most ``room`` new jobs,
        then send them; returns how many objects it took (None: the backfill is no longer listing)."""
        with self.sessions() as session:
            backfill = session.get_one(Backfill, backfill_id)
            model = (backfill.model_name, backfill.model_version)
            known = _known_etags(session, backfill.bucket, [o.key for o in batch], model)
        wanted = [o for o in batch if filters.accepts(o) and o.etag not in known.get(o.key, ())]
        if len(wanted) > max(room, 0):
            cut = batch.index(wanted[max(room, 0)])
            batch, wanted = batch[:cut], wanted[: max(room, 0)]
        if not batch:
            return 0
        with self.sessions.begin() as session:
            backfill = session.get_one(Backfill, backfill_id, with_for_update=True)
            if backfill.status != BackfillStatus.listing:
                return None
            to_send = _register(session, backfill, wanted, known)
            backfill.objects_listed += len(batch)
            backfill.objects_skipped += len(batch) - len(to_send)
            backfill.jobs_created += len(to_send)
            backfill.cursor_key = batch[-1].key
            backfill.updated_at = utcnow()
            counts = counts_of(backfill)
        self._send(to_send)
        if self.on_progress is not None:
            self.on_progress(counts)
        return len(batch)


def _known_etags(
    session: Session, bucket: str, keys: Sequence[str], model: tuple[str, str]
) -> dict[str, set[str]]:
    """ETags already recorded for these keys and model: key -> etags."""
    known: dict[str, set[str]] = {}
    if not keys:
        return known
    rows = session.execute(
        select(SourceObject.key, SourceObject.etag).where(
            SourceObject.bucket == bucket,
            SourceObject.key.in_(keys),
            SourceObject.model_name == model[0],
            SourceObject.model_version == model[1],
        )
    )
    for key, etag in rows:
        known.setdefault(key, set()).add(etag)
    return known


def _insert(session: Session, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database dialect {dialect!r}")


def _source_videos(
    session: Session, backfill: Backfill, objects: Sequence[ListedObject], now: datetime
) -> dict[str, uuid.UUID]:
    """The video of each S3 object (key -> video id), created where the object is new."""
    uris = {o.key: f"s3://{backfill.bucket}/{o.key}" for o in objects}
    session.execute(
        _insert(session, Video)
        .values(
            [
                {
                    "id": uuid.uuid4(),
                    "source_uri": uris[o.key],
                    "filename": posixpath.basename(o.key),
                    "size_bytes": o.size,
                    "created_at": now,
                }
                for o in objects
            ]
        )
        .on_conflict_do_nothing(index_elements=["source_uri"])
    )
    by_uri = dict(
        session.execute(select(Video.source_uri, Video.id).where(Video.source_uri.in_(uris.values())))
        .tuples()
        .all()
    )
    return {key: by_uri[uri] for key, uri in uris.items()}


def _register(
    session: Session, backfill: Backfill, objects: Sequence[ListedObject], known: dict[str, set[str]]
) -> list[tuple[int, uuid.UUID]]:
    """Videos, jobs and source-object rows for ``objects``; returns the (row, job) pairs to send.

    A new object gets a new job. An object whose earlier version (another ETag) was indexed gets its
    job queued again. An object whose job exists without a recorded version (submitted through the
    API) or is in flight is adopted, not redone. Inserts skip rows a concurrent runner wrote first.
    """
    if not objects:
        return []
    now = utcnow()
    video_ids = (
        {o.key: uuid.UUID(o.key) for o in objects}  # a reindex lists videos by id
        if backfill.kind == BackfillKind.reindex
        else _source_videos(session, backfill, objects, now)
    )
    new_jobs = set(
        session.scalars(
            _insert(session, Job)
            .values(
                [
                    {
                        "id": uuid.uuid4(),
                        "video_id": video_ids[o.key],
                        "model_name": backfill.model_name,
                        "model_version": backfill.model_version,
                        "status": JobStatus.queued,
                        "attempts": 0,
                        "progress": 0.0,
                        "options": backfill.options,
                        "backfill_id": backfill.id,
                        "created_at": now,
                    }
                    for o in objects
                ]
            )
            .on_conflict_do_nothing(index_elements=["video_id", "model_name", "model_version"])
            .returning(Job.id)
        )
    )
    jobs = {
        job.video_id: job
        for job in session.scalars(
            select(Job).where(
                Job.video_id.in_(video_ids.values()),
                Job.model_name == backfill.model_name,
                Job.model_version == backfill.model_version,
            )
        )
    }
    outcomes: dict[str, str] = {}
    for o in objects:
        job = jobs[video_ids[o.key]]
        if job.id in new_jobs:
            outcomes[o.key] = "queued"
        elif known.get(o.key) and job.status in (JobStatus.succeeded, JobStatus.failed):
            _requeue(session, job, backfill, video_ids[o.key])
            outcomes[o.key] = "queued"
        else:
            outcomes[o.key] = "adopted"
    inserted = session.execute(
        _insert(session, SourceObject)
        .values(
            [
                {
                    "bucket": backfill.bucket,
                    "key": o.key,
                    "etag": o.etag,
                    "model_name": backfill.model_name,
                    "model_version": backfill.model_version,
                    "size_bytes": o.size,
                    "last_modified": o.last_modified,
                    "job_id": jobs[video_ids[o.key]].id,
                    "backfill_id": backfill.id,
                    "outcome": outcomes[o.key],
                    "created_at": now,
                }
                for o in objects
            ]
        )
        .on_conflict_do_nothing(index_elements=["bucket", "key", "etag", "model_name", "model_version"])
        .returning(SourceObject.id, SourceObject.key, SourceObject.job_id)
    ).all()
    return sorted(
        ((row_id, job_id) for row_id, key, job_id in inserted if outcomes[key] == "queued"),
        key=lambda pair: pair[0],
    )


def _requeue(session: Session, job: Job, backfill: Backfill, video_id: uuid.UUID) -> None:
    """The object changed since it was indexed: index its new bytes under the same job."""
    job.status = JobStatus.queued
    job.reason = job.detail = None
    job.attempts = 0
    job.progress = 0.0
    job.started_at = job.finished_at = None
    job.options = backfill.options
    job.backfill_id = backfill.id
    video = session.get_one(Video, video_id)
    video.sha256 = None  # other bytes now; the worker hashes them again


def advance(runner: BackfillRunner, backfill_id: uuid.UUID) -> tuple[str, bool]:
    """One non-blocking step of a backfill in a worker: list as far as the queue cap allows, then
    export the results once every job has finished. Returns what happened and whether to come back."""
    outcome = runner.run(backfill_id, block=False)
    if outcome in (RunOutcome.throttled, RunOutcome.busy):
        return str(outcome), True
    with runner.sessions.begin() as session:
        finished = finished_jobs(session, backfill_id)
        row = session.get_one(Backfill, backfill_id, with_for_update=True)
        refresh(session, row, finished)
        export = row.output_uri is not None and row.exported_at is None
        status = row.status
    if export and status == BackfillStatus.completed:
        export_results(runner.sessions, runner.s3, backfill_id)
        return "exported", False
    return str(outcome), export and status in ACTIVE


def build_runner(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    producer: Any,
    on_progress: Callable[[BackfillCounts], None] | None = None,
) -> BackfillRunner:
    """A runner on this process's S3 client (settings or the standard AWS chain) and broker."""
    import redis

    from services.core.queue import enqueue_index_video, index_queue_length
    from services.core.storage import s3_client

    broker = redis.Redis.from_url(settings.redis_url, socket_timeout=settings.io_timeout_s)
    return BackfillRunner(
        settings=settings,
        sessions=sessions,
        s3=s3_client(settings),
        send=lambda job_id: enqueue_index_video(producer, job_id),
        queue_length=lambda: index_queue_length(broker),
        on_progress=on_progress,
    )


EXPORT_CHUNK = 500  # videos per database read while exporting


def _labels(rows: Sequence[VideoLabel] | Sequence[WindowLabel]) -> list[dict[str, Any]]:
    return [{"label": r.label, "index": r.label_index, "score": r.score} for r in rows]


def export_results(sessions: sessionmaker[Session], s3: Any, backfill_id: uuid.UUID) -> int:
    """Write one JSON Lines object per video of this backfill under its output prefix, named after
    the source key (``<output prefix><key>.jsonl``): a first line with the video's status, labels
    and segments (where each label happens), then one line per window. Idempotent (objects are
    overwritten); returns the count."""
    with sessions() as session:
        backfill = session.get_one(Backfill, backfill_id)
        if backfill.output_uri is None:
            return 0
        out_bucket, out_prefix = parse_prefix_uri(backfill.output_uri)
        model = {"name": backfill.model_name, "version": backfill.model_version}
        rows = session.execute(
            select(SourceObject.key, SourceObject.etag, Job, Video)
            .join(Job, SourceObject.job_id == Job.id)
            .join(Video, Job.video_id == Video.id)
            .where(SourceObject.backfill_id == backfill_id, SourceObject.outcome == "queued")
            .order_by(SourceObject.key)
        ).all()
    written = 0
    for start in range(0, len(rows), EXPORT_CHUNK):
        chunk = rows[start : start + EXPORT_CHUNK]
        ids = [video.id for _, _, _, video in chunk]
        with sessions() as session:
            of_model = (ids, model["name"], model["version"])
            video_labels: dict[uuid.UUID, list[VideoLabel]] = {}
            for vl in session.scalars(label_rows(VideoLabel, *of_model)):
                video_labels.setdefault(vl.video_id, []).append(vl)
            windows: dict[uuid.UUID, dict[int, list[WindowLabel]]] = {}
            for wl in session.scalars(label_rows(WindowLabel, *of_model)):
                windows.setdefault(wl.video_id, {}).setdefault(wl.window_index, []).append(wl)
            segments: dict[uuid.UUID, list[LabelSegment]] = {}
            for segment in session.scalars(label_rows(LabelSegment, *of_model)):
                segments.setdefault(segment.video_id, []).append(segment)
        for source_key, etag, job, video in chunk:
            head = {
                "source_uri": video.source_uri,
                "etag": etag,
                "status": job.status,
                "reason": job.reason,
                "model": model,
                "duration_s": video.duration_s,
                "labels": _labels(video_labels.get(video.id, [])),
                "segments": [
                    {
                        "label": g.label,
                        "start_ms": g.start_ms,
                        "end_ms": g.end_ms,
                        "windows": g.windows,
                        "score": g.score,
                        "mean_score": g.mean_score,
                    }
                    for g in segments.get(video.id, [])
                ],
            }
            lines = [head] + [
                {"window": index, "start_ms": ws[0].start_ms, "end_ms": ws[0].end_ms, "labels": _labels(ws)}
                for index, ws in sorted(windows.get(video.id, {}).items())
            ]
            body = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
            s3.put_object(
                Bucket=out_bucket,
                Key=f"{out_prefix}{source_key}.jsonl",
                Body=body,
                ContentType="application/x-ndjson",
            )
            written += 1
    with sessions.begin() as session:
        session.get_one(Backfill, backfill_id).exported_at = utcnow()
    return written
