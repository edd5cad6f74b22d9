"""The backfill runner: lists one backfill's prefix into jobs, resumably.

An object is keyed by (bucket, key, ETag, model name, model version) in ``source_objects``; that
unique key makes re-runs and overlapping prefixes enqueue nothing twice, and a changed object (new
ETag) is indexed again. The listing cursor (the last key whose outcome is stored) and the counts
change in the same transaction as the jobs, so a runner killed at any point resumes exactly where it
stopped. Videos and jobs are registered by ``indexing.jobs.submit_many``; job ids are sent after the
commit and marked sent (a duplicate message is harmless; an unsent job is sent by the reaper).
"""

from __future__ import annotations

import logging
import posixpath
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from services.core.backfills.definition import (
    ACTIVE,
    BATCH_OBJECTS,
    BackfillCounts,
    BackfillError,
    BackfillFilters,
    BackfillKind,
    BackfillStatus,
    RunOutcome,
    utcnow,
)
from services.core.backfills.export import export_results
from services.core.backfills.listing import ListedObject, list_objects
from services.core.backfills.status import counts_of, finished_jobs, refresh
from services.core.config import Settings
from services.core.db import dialect_insert
from services.core.indexing import jobs
from services.core.indexing.errors import reason_for
from services.core.models import Backfill, Job, JobStatus, SourceObject, Video
from services.core.versions import ModelVersion

log = logging.getLogger(__name__)


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
        if not rows:
            return
        jobs.send_jobs(self.sessions, self.send, [job_id for _, job_id in rows])
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
            # A reindex's own filters select its videos as they are listed.
            filters = BackfillFilters(None, 0) if reindex else BackfillFilters.from_dict(backfill.filters)
            stored_filters, tenant_id = backfill.filters, backfill.tenant_id
        try:
            pages = (
                self._videos(stored_filters, cursor, tenant_id)
                if reindex
                else list_objects(
                    self.s3, bucket, prefix, start_after=cursor, page_size=self.settings.backfill_page_size
                )
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

    def _videos(
        self, filters: dict[str, Any], cursor: str | None, tenant_id: uuid.UUID
    ) -> Iterator[list[ListedObject]]:
        from services.core.reindex import ReindexFilters, index_pages

        return index_pages(
            self.sessions,
            ReindexFilters.from_dict(filters),
            start_after=cursor,
            page_size=self.settings.backfill_page_size,
            tenant_id=tenant_id,
        )

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


def _indexed_videos(session: Session, objects: Sequence[ListedObject]) -> list[jobs.VideoSpec]:
    """A reindex's objects are videos already indexed (key: the video id): found as they are."""
    videos = {
        v.id: v
        for v in session.scalars(select(Video).where(Video.id.in_([uuid.UUID(o.key) for o in objects])))
    }
    specs = []
    for o in objects:
        video = videos[uuid.UUID(o.key)]
        by = {"sha256": video.sha256} if video.sha256 else {"source_uri": video.source_uri}
        specs.append(jobs.VideoSpec(**by, filename=video.filename, changed=False))
    return specs


def _register(
    session: Session, backfill: Backfill, objects: Sequence[ListedObject], known: dict[str, set[str]]
) -> list[tuple[int, uuid.UUID]]:
    """Jobs and source-object rows for ``objects``; returns the (row, job) pairs to send.

    A new object gets a new job. An object whose earlier version (another ETag) was indexed gets its
    job queued again. An object whose job exists without a recorded version (submitted through the
    API) or is in flight is adopted, not redone. Inserts skip rows a concurrent runner wrote first.
    """
    if not objects:
        return []
    now = utcnow()
    submissions = jobs.submit_many(
        session=session,
        videos=_indexed_videos(session, objects)
        if backfill.kind == BackfillKind.reindex
        else [
            jobs.VideoSpec(
                source_uri=f"s3://{backfill.bucket}/{o.key}",
                filename=posixpath.basename(o.key),
                size_bytes=o.size,
                changed=bool(known.get(o.key)),
            )
            for o in objects
        ],
        model=ModelVersion(backfill.model_name, backfill.model_version),
        options=backfill.options,
        backfill_id=backfill.id,
        retry_failed=False,
        tenant_id=backfill.tenant_id,
    )
    outcomes = {
        o.key: "queued" if s.created or s.requeued else "adopted"
        for o, s in zip(objects, submissions, strict=True)
    }
    job_ids = {o.key: s.job.id for o, s in zip(objects, submissions, strict=True)}
    inserted = session.execute(
        dialect_insert(session, SourceObject)
        .values(
            [
                {
                    "tenant_id": backfill.tenant_id,
                    "bucket": backfill.bucket,
                    "key": o.key,
                    "etag": o.etag,
                    "model_name": backfill.model_name,
                    "model_version": backfill.model_version,
                    "size_bytes": o.size,
                    "last_modified": o.last_modified,
                    "job_id": job_ids[o.key],
                    "backfill_id": backfill.id,
                    "outcome": outcomes[o.key],
                    "created_at": now,
                }
                for o in objects
            ]
        )
        .on_conflict_do_nothing(
            index_elements=["tenant_id", "bucket", "key", "etag", "model_name", "model_version"]
        )
        .returning(SourceObject.id, SourceObject.key, SourceObject.job_id)
    ).all()
    return sorted(
        ((row_id, job_id) for row_id, key, job_id in inserted if outcomes[key] == "queued"),
        key=lambda pair: pair[0],
    )


def advance(runner: BackfillRunner, backfill_id: uuid.UUID) -> tuple[str, bool]:
    """One non-blocking step of a backfill in a worker: list as far as the queue cap allows, then
    export the results once every job has finished. Returns what happened and whether to come back."""
    try:
        outcome = runner.run(backfill_id, block=False)
    except Exception as exc:
        if not reason_for(exc).retryable:
            raise
        # An outage: the listing resumes from its cursor when this step comes back.
        log.warning("backfill %s waits: %s: %s", backfill_id, reason_for(exc), exc)
        return str(RunOutcome.unavailable), True
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
