"""Every transition of a job, in one place: submit (and requeue), claim, heartbeat, succeed, fail,
defer, cancel.

Functions are keyword-only and take ``session=``: the caller owns the transaction and commits. The
job row is the truth. A broker message only wakes a worker up, so messages are sent after the commit
(``send_jobs``) and a lost or duplicated one never loses or doubles a job:

- ``claim`` takes a lease (owner token, expiry). A delivery that finds a live lease held by another
  owner does nothing; one that finds an expired lease takes over (the previous run died).
- ``attempts`` counts real failures only: runs that died, hit the time limit or failed for good.
  Outages ``defer`` the job (capped exponential backoff until its deadline) without burning one.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.core.config import Settings
from services.core.db import dialect_insert
from services.core.indexing import outbox
from services.core.indexing.errors import BrokerUnavailableError, IndexingError
from services.core.indexing.reasons import FailureReason
from services.core.models import DEFAULT_TENANT_ID, Job, JobStatus, Video, WebhookDelivery
from services.core.versions import ModelVersion

FINAL = (JobStatus.succeeded, JobStatus.failed)
DETAIL_CHARS = 2000


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(dt: datetime) -> datetime:
    # SQLite returns naive datetimes for timezone-aware columns.
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@dataclass(frozen=True)
class VideoSpec:
    """A video to index, found by its content hash (bytes we hold or read in place) or, without one,
    by its source URI (an S3 object not read yet)."""

    sha256: str | None = None
    source_uri: str | None = None
    source_etag: str | None = None  # the S3 version submitted: another one than indexed re-indexes
    storage_key: str | None = None
    filename: str | None = None
    content_type: str | None = None
    size_bytes: int | None = None
    changed: bool | None = None  # the caller knows the content changed (None: tell by ETag)

    def __post_init__(self) -> None:
        if self.sha256 is None and self.source_uri is None:
            raise ValueError("a video needs a content hash or a source URI")


@dataclass(frozen=True)
class Submission:
    job: Job
    video: Video
    created: bool  # a new job
    duplicate: bool  # the video was known before
    send: bool  # a wake-up message is due once the transaction commits
    requeued: bool  # an existing job was reset to run again
    orphan_key: str | None  # our new copy of bytes we already had: the caller deletes it


def submit(
    *,
    session: Session,
    video: VideoSpec,
    model: ModelVersion,
    options: dict[str, Any],
    backfill_id: uuid.UUID | None = None,
    retry_failed: bool = True,
    tenant_id: uuid.UUID = DEFAULT_TENANT_ID,
) -> Submission:
    """Find or create the video and its job for ``model``; see ``submit_many``."""
    return submit_many(
        session=session,
        videos=[video],
        model=model,
        options=options,
        backfill_id=backfill_id,
        retry_failed=retry_failed,
        tenant_id=tenant_id,
    )[0]


def submit_many(
    *,
    session: Session,
    videos: Sequence[VideoSpec],
    model: ModelVersion,
    options: dict[str, Any],
    backfill_id: uuid.UUID | None = None,
    retry_failed: bool = True,
    tenant_id: uuid.UUID = DEFAULT_TENANT_ID,
) -> list[Submission]:
    """Videos and jobs in one statement each (concurrent submitters never collide: inserts skip
    rows another wrote first). An existing job is requeued when it failed (``retry_failed``) or
    its content changed; a queued job is sent again (its message may be lost); a running one whose
    lease expired is sent again so that a worker takes it over. Videos are ``tenant_id``'s: content
    is deduplicated per tenant, and another tenant's video or job is never found or changed."""
    if not videos:
        return []
    now = utcnow()
    _free_moved_uris(session, videos, tenant_id)
    by_key = _upsert_videos(session, videos, now, tenant_id)
    rows = [by_key[_key(spec)] for spec in videos]
    new_jobs = _insert_jobs(session, rows, model, options, backfill_id, now, tenant_id)
    jobs = {
        job.video_id: job
        for job in session.scalars(
            select(Job).where(
                Job.video_id.in_([v.id for v, _ in rows]),
                Job.model_name == model.name,
                Job.model_version == model.version,
            )
        )
    }
    out = []
    for spec, (video, existed) in zip(videos, rows, strict=True):
        job = jobs[video.id]
        created = job.id in new_jobs
        if spec.sha256 is not None and spec.source_uri is not None:
            video.source_uri = spec.source_uri  # same bytes, moved or copied: read them where they are
        requeued = not created and _requeue_if_due(
            session, job, video, spec, options=options, backfill_id=backfill_id, retry_failed=retry_failed
        )
        send = created or requeued or _needs_wake_up(job)
        orphan = spec.storage_key if existed and video.storage_key != spec.storage_key else None
        out.append(Submission(job, video, created, existed, send, requeued, orphan))
    return out


def _key(spec: VideoSpec) -> tuple[str, str]:
    return ("sha256", spec.sha256) if spec.sha256 is not None else ("uri", spec.source_uri or "")


def _free_moved_uris(session: Session, videos: Sequence[VideoSpec], tenant_id: uuid.UUID) -> None:
    """A local file now holds other bytes than the video that names it: that video loses the URI."""
    for spec in videos:
        if spec.sha256 is not None and spec.source_uri is not None:
            session.execute(
                update(Video)
                .where(
                    Video.tenant_id == tenant_id,
                    Video.source_uri == spec.source_uri,
                    Video.sha256.is_distinct_from(spec.sha256),
                )
                .values(source_uri=None)
                .execution_options(synchronize_session=False)
            )


def _upsert_videos(
    session: Session, videos: Sequence[VideoSpec], now: datetime, tenant_id: uuid.UUID
) -> dict[tuple[str, str], tuple[Video, bool]]:
    shas = [v.sha256 for v in videos if v.sha256 is not None]
    uris = [v.source_uri for v in videos if v.sha256 is None and v.source_uri is not None]
    inserted = set(
        session.scalars(
            dialect_insert(session, Video)
            .values(
                [
                    {
                        "id": uuid.uuid4(),
                        "tenant_id": tenant_id,
                        "sha256": v.sha256,
                        "storage_key": v.storage_key,
                        "source_uri": v.source_uri,
                        "filename": v.filename,
                        "content_type": v.content_type,
                        "size_bytes": v.size_bytes,
                        "created_at": now,
                    }
                    for v in videos
                ]
            )
            .on_conflict_do_nothing()
            .returning(Video.id)
        )
    )
    found: dict[tuple[str, str], tuple[Video, bool]] = {}
    if shas:
        for video in session.scalars(
            select(Video).where(Video.tenant_id == tenant_id, Video.sha256.in_(shas))
        ):
            found[("sha256", video.sha256 or "")] = (video, video.id not in inserted)
    if uris:
        for video in session.scalars(
            select(Video).where(Video.tenant_id == tenant_id, Video.source_uri.in_(uris))
        ):
            found[("uri", video.source_uri or "")] = (video, video.id not in inserted)
    return found


def _insert_jobs(
    session: Session,
    rows: Sequence[tuple[Video, bool]],
    model: ModelVersion,
    options: dict[str, Any],
    backfill_id: uuid.UUID | None,
    now: datetime,
    tenant_id: uuid.UUID,
) -> set[uuid.UUID]:
    values = [
        {
            "id": uuid.uuid4(),
            "tenant_id": tenant_id,
            "video_id": video.id,
            "model_name": model.name,
            "model_version": model.version,
            "status": JobStatus.queued,
            "attempts": 0,
            "deferrals": 0,
            "progress": 0.0,
            "options": options,
            "backfill_id": backfill_id,
            "created_at": now,
        }
        for video in {v.id: v for v, _ in rows}.values()
    ]
    return set(
        session.scalars(
            dialect_insert(session, Job)
            .values(values)
            .on_conflict_do_nothing(index_elements=["video_id", "model_name", "model_version"])
            .returning(Job.id)
        )
    )


def _requeue_if_due(
    session: Session,
    job: Job,
    video: Video,
    spec: VideoSpec,
    *,
    options: dict[str, Any],
    backfill_id: uuid.UUID | None,
    retry_failed: bool,
) -> bool:
    changed = spec.changed
    if changed is None:
        changed = spec.source_etag is not None and video.source_etag not in (None, spec.source_etag)
    if (job.status == JobStatus.failed and retry_failed) or (job.status in FINAL and changed):
        requeue(session=session, job=job, options=options, backfill_id=backfill_id, content_changed=changed)
        return True
    return False


def _needs_wake_up(job: Job) -> bool:
    """A queued job may have lost its message; a running one whose lease expired lost its worker.
    Either way a message is sent again (a duplicate is harmless: one claim takes the lease)."""
    if job.status == JobStatus.queued:
        return True
    return job.status == JobStatus.running and not lease_is_live(job, utcnow())


def requeue(
    *,
    session: Session,
    job: Job,
    options: dict[str, Any],
    backfill_id: uuid.UUID | None = None,
    content_changed: bool = False,
) -> None:
    """Index the job's video again from scratch, with ``options``: the one way a job is reset."""
    job.status = JobStatus.queued
    job.reason = job.detail = None
    job.attempts = job.deferrals = 0
    job.progress = 0.0
    job.started_at = job.finished_at = None
    job.lease_owner = job.lease_expires_at = None
    job.sent_at = job.next_attempt_at = job.deadline_at = None
    job.sampling = job.shortfall_windows = job.decode_fallback = None
    job.shortfall_frames = None
    job.options = options
    if backfill_id is not None:
        job.backfill_id = backfill_id
    # A new run is a new outcome to notify.
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.job_id == job.id))
    if content_changed:
        session.get_one(Video, job.video_id).sha256 = None  # other bytes now; the worker hashes them


def send_jobs(
    sessions: sessionmaker[Session], send: Callable[[str], None], job_ids: Iterable[uuid.UUID]
) -> None:
    """Send each job's wake-up message, then record when (after the commit that made the jobs).

    A broker outage raises ``BrokerUnavailableError`` with the unsent jobs left for the reaper."""
    sent: list[uuid.UUID] = []
    try:
        for job_id in job_ids:
            send(str(job_id))
            sent.append(job_id)
    except Exception as exc:
        from services.core.indexing.errors import reason_for

        if reason_for(exc) is not FailureReason.broker_unavailable:
            raise
        raise BrokerUnavailableError(f"broker unavailable: {exc}") from exc
    finally:
        if sent:
            with sessions.begin() as session:
                mark_sent(session=session, job_ids=sent)


def mark_sent(*, session: Session, job_ids: Sequence[uuid.UUID], at: datetime | None = None) -> None:
    session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.status == JobStatus.queued)
        .values(sent_at=at or utcnow())
        .execution_options(synchronize_session=False)
    )


class ClaimOutcome(StrEnum):
    claimed = "claimed"
    missing = "missing"  # no such job (deleted)
    finished = "finished"  # already succeeded or failed: a late duplicate
    busy = "busy"  # another owner holds a live lease: a duplicate delivery
    not_due = "not_due"  # deferred until later; its own wake-up comes then
    failed = "failed"  # the claim itself ended the job (too many attempts, deadline)


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    job: Job | None = None


def lease_is_live(job: Job, now: datetime) -> bool:
    return job.lease_expires_at is not None and as_utc(job.lease_expires_at) > now


def claim(
    *,
    session: Session,
    job_id: uuid.UUID,
    owner: str,
    settings: Settings,
    previous_owner: str | None = None,
) -> Claim:
    """Take the job's lease if nobody else holds a live one. Finding another owner's expired lease
    means that run died: it counts as a failed attempt, and at the cap the job fails
    ``too_many_attempts``. So does finding one's own lease (the message redelivered after its
    worker was lost: a video that kills its worker must not loop). Only a lease held by
    ``previous_owner`` (the try of this delivery that met an outage it could not record) is taken
    over without counting."""
    now = utcnow()
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        return Claim(ClaimOutcome.missing)
    if job.status in FINAL:
        return Claim(ClaimOutcome.finished, job)
    if job.status == JobStatus.running:
        resumed = previous_owner is not None and job.lease_owner == previous_owner
        if job.lease_owner != owner and not resumed and lease_is_live(job, now):
            return Claim(ClaimOutcome.busy, job)
        if not resumed and _count_lost_run(session, job, settings):
            return Claim(ClaimOutcome.failed, job)
    elif job.next_attempt_at is not None and as_utc(job.next_attempt_at) > now:
        return Claim(ClaimOutcome.not_due, job)
    if job.deadline_at is not None and as_utc(job.deadline_at) <= now:
        last = f"{job.reason}: {job.detail}" if job.reason else "no run finished"
        _finish(session, job, FailureReason.deadline_exceeded, f"gave up at its deadline; last: {last}")
        return Claim(ClaimOutcome.failed, job)
    job.status = JobStatus.running
    job.lease_owner = owner
    job.lease_expires_at = now + timedelta(seconds=settings.job_lease_s)
    job.started_at = now
    job.next_attempt_at = None
    job.progress = 0.0
    return Claim(ClaimOutcome.claimed, job)


def _count_lost_run(session: Session, job: Job, settings: Settings) -> bool:
    """The running job's lease expired: one more attempt. True when that ended the job."""
    job.attempts += 1
    if job.attempts >= settings.job_max_attempts:
        _finish(
            session,
            job,
            FailureReason.too_many_attempts,
            f"gave up after {job.attempts} runs that died without an outcome",
        )
        return True
    return False


def release_expired(*, session: Session, job: Job, settings: Settings, now: datetime | None = None) -> None:
    """The reaper found the running job's lease expired (its run died): queue it again unsent,
    counting the lost run as an attempt (at the cap the job fails ``too_many_attempts``)."""
    if job.status != JobStatus.running or lease_is_live(job, now or utcnow()):
        return
    if _count_lost_run(session, job, settings):
        return
    job.status = JobStatus.queued
    job.lease_owner = job.lease_expires_at = None
    job.sent_at = None


def heartbeat(
    *, session: Session, job_id: uuid.UUID, owner: str, settings: Settings, progress: float | None = None
) -> bool:
    """Renew ``owner``'s lease (and record progress); False when the lease is no longer ours."""
    values: dict[str, Any] = {"lease_expires_at": utcnow() + timedelta(seconds=settings.job_lease_s)}
    if progress is not None:
        values["progress"] = round(progress, 4)
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.running, Job.lease_owner == owner)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def held(*, session: Session, job_id: uuid.UUID, owner: str) -> Job | None:
    """The job, locked, if ``owner`` still runs it (else another run took over or it ended)."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.status != JobStatus.running or job.lease_owner != owner:
        return None
    return job


def succeed(*, session: Session, job: Job, labels: Sequence[dict[str, Any]] = ()) -> None:
    """The held job is done; its webhook (if any) goes into the outbox in the same transaction."""
    job.status = JobStatus.succeeded
    job.reason = job.detail = None
    job.progress = 1.0
    job.finished_at = utcnow()
    job.lease_owner = job.lease_expires_at = None
    job.next_attempt_at = job.deadline_at = None
    outbox.record(session=session, job=job, labels=labels)


def fail(
    *, session: Session, job_id: uuid.UUID, reason: FailureReason, detail: str, owner: str | None = None
) -> Job | None:
    """End the job for good with ``reason`` (a run failing, or the reaper): counts as an attempt.
    With ``owner``, only while that owner holds it. Returns the job, or None when not ours."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.status in FINAL or (owner is not None and job.lease_owner != owner):
        return None
    job.attempts += 1
    _finish(session, job, reason, detail)
    return job


def _finish(session: Session, job: Job, reason: FailureReason, detail: str) -> None:
    job.status = JobStatus.failed
    job.reason = reason
    job.detail = detail[:DETAIL_CHARS]
    job.finished_at = utcnow()
    job.lease_owner = job.lease_expires_at = None
    job.next_attempt_at = None
    outbox.record(session=session, job=job, labels=())


def defer(
    *,
    session: Session,
    job_id: uuid.UUID,
    error: IndexingError | FailureReason,
    detail: str,
    settings: Settings,
    owner: str | None = None,
    count_attempt: bool = False,
) -> Job | None:
    """A transient failure: back to queued until ``next_attempt_at`` (capped exponential backoff
    with jitter), until the job's deadline; then it fails ``deadline_exceeded``. Only a run that
    itself failed (``count_attempt``: the time limit) burns an attempt."""
    reason = error if isinstance(error, FailureReason) else error.reason
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.status in FINAL or (owner is not None and job.lease_owner != owner):
        return None
    now = utcnow()
    if count_attempt:
        job.attempts += 1
        if job.attempts >= settings.job_max_attempts:
            # Run after run fails the same way: that is no longer an outage.
            _finish(session, job, FailureReason.too_many_attempts, f"{reason} {job.attempts} times: {detail}")
            return job
    if job.deadline_at is None:
        job.deadline_at = now + timedelta(seconds=settings.job_deadline_s)
    delay = min(settings.job_retry_cap_s, settings.job_retry_base_s * 2**job.deferrals)
    job.next_attempt_at = now + timedelta(seconds=delay * random.uniform(0.8, 1.0))
    if job.next_attempt_at >= as_utc(job.deadline_at):
        _finish(session, job, FailureReason.deadline_exceeded, f"{reason}: {detail}")
        return job
    job.status = JobStatus.queued
    job.reason = reason
    job.detail = detail[:DETAIL_CHARS]
    job.deferrals += 1
    job.lease_owner = job.lease_expires_at = None
    job.sent_at = None  # the reaper sends its wake-up once next_attempt_at has come
    return job


def cancel(*, session: Session, jobs: Select[tuple[uuid.UUID]], detail: str) -> int:
    """Fail the selected jobs that no worker has started (reason ``cancelled``); returns how many."""
    result = session.execute(
        update(Job)
        .where(Job.id.in_(jobs), Job.status == JobStatus.queued, Job.started_at.is_(None))
        .values(
            status=JobStatus.failed,
            reason=FailureReason.cancelled,
            detail=detail,
            finished_at=utcnow(),
            next_attempt_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0))
