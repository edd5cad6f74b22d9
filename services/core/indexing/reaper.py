"""The reaper: what recovers jobs without a human, within about a minute of the cause going away.

One pass (``reap_once``), run by one process at a time (a PostgreSQL advisory lock; SQLite has a
single process and needs none):

- running jobs whose lease expired (their worker died, or hit the hard time limit) go back to
  queued, the lost run counted as an attempt;
- queued jobs that are due and were never sent (broker down at submit, released above, deferred)
  are sent; those sent ``job_resend_after_s`` ago are sent again while the broker queue is empty
  (the broker lost its data): a duplicate message is harmless, the claim takes one lease;
- backfills stuck in ``listing`` (the first message lost) are sent to a worker again;
- webhooks committed but not delivered are delivered, with backoff.

Every worker runs it in a loop thread; ``tsmindex reaper`` runs it alone. ``scope`` limits a pass
to some jobs and backfills (tests, and operators acting on one backfill).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, and_, or_, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from services.core.config import Settings
from services.core.indexing import jobs, outbox
from services.core.models import Backfill, Job, JobStatus

log = logging.getLogger(__name__)

LOCK_KEY = 0x7473_6D69_6478  # "tsmidx": one reaper per database
BATCH = 500  # jobs per statement: bounds a pass's transactions
UNSENT_GRACE_S = 5.0  # a submitter sends right after its commit: leave it that long


@dataclass(frozen=True)
class Scope:
    job_ids: Sequence[uuid.UUID] | None = None
    backfill_ids: Sequence[uuid.UUID] | None = None


@dataclass(frozen=True)
class ReapReport:
    requeued: int = 0
    resent: int = 0
    backfills_resumed: int = 0
    webhooks_delivered: int = 0


def reap_once(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    send_job: Callable[[str], None],
    send_backfill: Callable[[str], None],
    queue_length: Callable[[], int] | None = None,
    scope: Scope | None = None,
    now: datetime | None = None,
) -> ReapReport | None:
    """One pass (as of ``now``, the clock by default); None when another process holds the lock."""
    now = now or jobs.utcnow()
    with _lock(sessions.kw["bind"]) as held:
        if not held:
            return None
        released = _release_expired(sessions, settings, scope, now)
        resent = _resend(sessions, settings, send_job, queue_length, scope, now, released)
        resumed = _resume_backfills(sessions, settings, send_backfill, scope, now)
        delivered = outbox.deliver_due(sessions, settings, job_ids=scope.job_ids if scope else None)
    report = ReapReport(len(released), resent, resumed, delivered)
    if report != ReapReport():
        log.info("reaper: %s", report)
    return report


@contextmanager
def _lock(engine: Engine) -> Iterator[bool]:
    if engine.dialect.name != "postgresql":
        yield True
        return
    with engine.connect() as conn:
        held = bool(conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}))
        conn.commit()
        try:
            yield held
        finally:
            if held:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                conn.commit()


def _release_expired(
    sessions: sessionmaker[Session], settings: Settings, scope: Scope | None, now: datetime
) -> list[uuid.UUID]:
    """Running jobs whose lease expired, queued again (or failed at the attempt cap)."""
    with sessions.begin() as session:
        query = (
            select(Job)
            .where(
                Job.status == JobStatus.running,
                or_(Job.lease_expires_at < now, Job.lease_expires_at.is_(None)),
            )
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
        if scope is not None and scope.job_ids is not None:
            query = query.where(Job.id.in_(scope.job_ids))
        expired = list(session.scalars(query))
        for job in expired:
            jobs.release_expired(session=session, job=job, settings=settings, now=now)
        return [job.id for job in expired if job.status == JobStatus.queued]


def _resend(
    sessions: sessionmaker[Session],
    settings: Settings,
    send: Callable[[str], None],
    queue_length: Callable[[], int] | None,
    scope: Scope | None,
    now: datetime,
    released: list[uuid.UUID],
) -> int:
    due = or_(Job.next_attempt_at.is_(None), Job.next_attempt_at <= now)
    unsent = and_(Job.sent_at.is_(None), Job.created_at < now - timedelta(seconds=UNSENT_GRACE_S))
    stale = Job.sent_at < now - timedelta(seconds=settings.job_resend_after_s)
    idle = queue_length is None or queue_length() == 0
    with sessions() as session:
        query = (
            select(Job.id)
            .where(Job.status == JobStatus.queued, due, or_(unsent, stale) if idle else unsent)
            .order_by(Job.created_at)
            .limit(BATCH)
        )
        if scope is not None and scope.job_ids is not None:
            query = query.where(Job.id.in_(scope.job_ids))
        ids = list(dict.fromkeys([*released, *session.scalars(query)]))
    if ids:
        jobs.send_jobs(sessions, send, ids)
    return len(ids)


def _resume_backfills(
    sessions: sessionmaker[Session],
    settings: Settings,
    send: Callable[[str], None],
    scope: Scope | None,
    now: datetime,
) -> int:
    if scope is not None and scope.backfill_ids is None:
        return 0
    idle_since = now - timedelta(seconds=settings.backfill_resume_after_s)
    with sessions.begin() as session:
        query = (
            select(Backfill.id)
            .where(
                Backfill.status == "listing",
                or_(Backfill.updated_at.is_(None), Backfill.updated_at < idle_since),
            )
            .limit(BATCH)
        )
        if scope is not None and scope.backfill_ids is not None:
            query = query.where(Backfill.id.in_(scope.backfill_ids))
        ids = list(session.scalars(query))
        if ids:
            # Marked first: a resumed runner that is slow to start is not sent twice a pass.
            session.execute(update(Backfill).where(Backfill.id.in_(ids)).values(updated_at=now))
    for backfill_id in ids:
        send(str(backfill_id))
    return len(ids)


class ReaperThread(threading.Thread):
    """``reap_once`` every ``reaper_interval_s`` until stopped; errors are logged, not fatal
    (the database or broker may be down: that is what the next pass is for)."""

    def __init__(self, reap: Callable[[], object], interval_s: float) -> None:
        super().__init__(name="tsmindex-reaper", daemon=True)
        self._reap = reap
        self._interval_s = interval_s
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self._interval_s):
            try:
                self._reap()
            except Exception as exc:
                log.warning("reaper pass failed: %s", exc)

    def stop(self) -> None:
        self._stop_event.set()
