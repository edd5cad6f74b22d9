"""``run_job``: one delivery of a job, from claim to notify.

claim (a lease) -> fetch -> sample and classify (chunk by chunk) -> store -> notify. A heartbeat
thread renews the lease while the run decodes and infers. Every failure is translated to a
``FailureReason`` in one place: a permanent one fails the job, a transient one defers it (no
attempt burned), a defect fails it as ``internal_error`` and is raised. When the database itself is
down, nothing can be recorded: ``DatabaseUnavailableError`` is raised for the task to retry, and the
lease expiring hands the job to the reaper if that retry never comes.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from services.core import metrics, served
from services.core.indexing import jobs, outbox
from services.core.indexing.errors import DatabaseUnavailableError, IndexingError, reason_for
from services.core.indexing.reasons import FailureReason
from services.core.models import JobStatus, Video
from services.core.storage import sha256_file
from services.core.versions import ModelVersion
from workers.indexing.classify import classify
from workers.indexing.context import PipelineContext
from workers.indexing.fetch import fetch
from workers.indexing.sample import open_stream
from workers.indexing.snapshot import JobSnapshot
from workers.indexing.store import Source, store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobResult:
    job_id: uuid.UUID
    status: str  # a JobStatus, or the claim outcome when this delivery did nothing
    reason: str | None = None
    detail: str | None = None
    retry_at: datetime | None = None  # a deferred job's next attempt


def run_job(
    job_id: uuid.UUID | str,
    ctx: PipelineContext,
    *,
    owner: str | None = None,
    previous_owner: str | None = None,
) -> JobResult:
    """Run one delivery of the job. ``owner`` names this try's lease; ``previous_owner`` the try of
    the same delivery that met an outage (its lease is taken over without counting an attempt)."""
    job_uuid = uuid.UUID(str(job_id))
    owner = owner or uuid.uuid4().hex
    try:
        snapshot = _claim(ctx, job_uuid, owner, previous_owner)
    except Exception as exc:
        if reason_for(exc) is FailureReason.database_unavailable:
            raise DatabaseUnavailableError(f"database unavailable at claim: {exc}") from exc
        raise
    if isinstance(snapshot, JobResult):
        if snapshot.status in jobs.FINAL:
            _notify(ctx, job_uuid)  # a webhook the claim wrote, or one a dead worker left behind
        return snapshot
    try:
        with _heartbeat(ctx, snapshot):
            result = _run(snapshot, ctx)
    except Exception as exc:
        result = _record_failure(ctx, snapshot, exc)
    _notify(ctx, job_uuid)
    return result


def _claim(
    ctx: PipelineContext, job_id: uuid.UUID, owner: str, previous_owner: str | None
) -> JobSnapshot | JobResult:
    with ctx.sessions.begin() as session:
        claim = jobs.claim(
            session=session, job_id=job_id, owner=owner, settings=ctx.settings, previous_owner=previous_owner
        )
        job = claim.job
        if claim.outcome is not jobs.ClaimOutcome.claimed or job is None:
            if job is None:
                return JobResult(job_id, str(claim.outcome))
            if claim.outcome is jobs.ClaimOutcome.failed:
                _count_outcome(job.reason)
            status = job.status if job.status in jobs.FINAL else str(claim.outcome)
            return JobResult(job_id, status, job.reason, job.detail, retry_at=job.next_attempt_at)
        video = session.get_one(Video, job.video_id)
        # Clips are cut the way the job's model wants them, whatever this worker's settings say.
        model = ModelVersion(job.model_name, job.model_version)
        preprocessing = served.preprocessing(session, ctx.settings, model)
        return JobSnapshot.of(job, video, owner=owner, settings=ctx.settings, preprocessing=preprocessing)


def _run(job: JobSnapshot, ctx: PipelineContext) -> JobResult:
    with tempfile.TemporaryDirectory(prefix="tsmindex-") as tmp:
        with _stage("fetch"):
            fetched = fetch(job, ctx, Path(tmp))
        # An S3 object may have changed since an earlier run: hash what was read this time.
        sha256 = sha256_file(fetched.path) if fetched.etag is not None or job.sha256 is None else job.sha256
        source = Source(sha256=sha256, size_bytes=fetched.path.stat().st_size, etag=fetched.etag)
        # Decoding and inference alternate chunk by chunk (classify times each stage).
        with open_stream(fetched.path, job.options, ctx.settings, job.preprocessing) as stream:
            inferred = classify(job, stream, ctx, lambda fraction: _progress(ctx, job, fraction))
            sampled = stream.finish(len(inferred.windows))
    with _stage("store"):
        row = store(ctx, job, sampled, source, inferred)
    if row is None:
        return _current(ctx, job.job_id)  # another run took over and finished or holds it
    metrics.VIDEOS_INDEXED.labels("succeeded").inc()
    created = jobs.as_utc(job.created_at)
    metrics.INDEX_LATENCY_SECONDS.observe((jobs.utcnow() - created).total_seconds())
    return JobResult(job.job_id, JobStatus.succeeded)


def _record_failure(ctx: PipelineContext, job: JobSnapshot, exc: Exception) -> JobResult:
    """Fail (permanent), defer (transient) or fail-and-raise (a defect); DB down: raise to retry."""
    reason = reason_for(exc)
    detail = exc.message if isinstance(exc, IndexingError) else f"{type(exc).__name__}: {exc}"
    if reason is FailureReason.inference_unavailable and ctx.breaker is not None:
        ctx.breaker.trip()
    metrics.JOB_ERRORS.labels(reason).inc()
    try:
        with ctx.sessions.begin() as session:
            if reason.retryable:
                row = jobs.defer(
                    session=session,
                    job_id=job.job_id,
                    error=reason,
                    detail=detail,
                    settings=ctx.settings,
                    owner=job.owner,
                    count_attempt=reason is FailureReason.time_limit,
                )
            else:
                row = jobs.fail(
                    session=session, job_id=job.job_id, reason=reason, detail=detail, owner=job.owner
                )
            result = (
                JobResult(job.job_id, row.status, row.reason, row.detail, retry_at=row.next_attempt_at)
                if row is not None
                else None
            )
    except Exception as db_exc:
        if reason_for(db_exc) is FailureReason.database_unavailable:
            raise DatabaseUnavailableError(f"database unavailable: {db_exc}") from exc
        raise
    if result is None:
        return _current(ctx, job.job_id)
    log.info("job %s %s: %s (%s)", job.job_id, result.status, reason, detail)
    if result.status == JobStatus.failed:
        metrics.VIDEOS_INDEXED.labels("failed").inc()
    if reason is FailureReason.internal_error:
        raise exc  # a defect: recorded on the job, and loud in the worker's log
    return result


def _count_outcome(reason: str | None) -> None:
    metrics.VIDEOS_INDEXED.labels("failed").inc()
    if reason is not None:
        metrics.JOB_ERRORS.labels(reason).inc()


def _current(ctx: PipelineContext, job_id: uuid.UUID) -> JobResult:
    from services.core.models import Job

    with ctx.sessions() as session:
        job = session.get_one(Job, job_id)
        return JobResult(job_id, job.status, job.reason, job.detail, retry_at=job.next_attempt_at)


def _notify(ctx: PipelineContext, job_id: uuid.UUID) -> None:
    """Deliver the job's webhook now; one that cannot be delivered stays for the reaper."""
    try:
        outbox.deliver_due(ctx.sessions, ctx.settings, job_ids=[job_id], limit=2)
    except Exception as exc:
        log.warning("webhook of job %s left for the reaper: %s", job_id, exc)


def _progress(ctx: PipelineContext, job: JobSnapshot, fraction: float) -> None:
    with ctx.sessions.begin() as session:
        jobs.heartbeat(
            session=session, job_id=job.job_id, owner=job.owner, settings=ctx.settings, progress=fraction
        )
    if ctx.on_progress is not None:
        ctx.on_progress(job.job_id, fraction)


@contextmanager
def _heartbeat(ctx: PipelineContext, job: JobSnapshot) -> Iterator[None]:
    """Renew the lease every ``job_heartbeat_s`` while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(ctx.settings.job_heartbeat_s):
            try:
                with ctx.sessions.begin() as session:
                    jobs.heartbeat(session=session, job_id=job.job_id, owner=job.owner, settings=ctx.settings)
            except Exception as exc:  # the database may be briefly away: the next beat retries
                log.warning("lease of job %s not renewed: %s", job.job_id, exc)

    thread = threading.Thread(target=beat, name=f"lease-{job.job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextmanager
def _stage(name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        metrics.STAGE_SECONDS.labels(name).observe(time.perf_counter() - start)
