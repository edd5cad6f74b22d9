from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from services.core.config import Settings
from services.core.indexing.reaper import UNSENT_GRACE_S, ReapReport, Scope, reap_once
from services.core.models import Backfill, Job
from tests.services.indexing.conftest import MakeJob


class Sent:
    """The messages a pass sends, in order (a stand-in for the broker's queue)."""

    def __init__(self) -> None:
        self.jobs: list[str] = []
        self.backfills: list[str] = []


def _reap(
    sessions: sessionmaker[Session],
    settings: Settings,
    sent: Sent,
    *,
    jobs: list[uuid.UUID] | None = None,
    backfills: list[uuid.UUID] | None = None,
    queue_length: int = 0,
    now: datetime | None = None,
) -> ReapReport | None:
    return reap_once(
        sessions,
        settings,
        send_job=sent.jobs.append,
        send_backfill=sent.backfills.append,
        queue_length=lambda: queue_length,
        scope=Scope(job_ids=jobs or [], backfill_ids=backfills),
        now=now,
    )


def _job(sessions: sessionmaker[Session], job_id: uuid.UUID) -> Job:
    with sessions() as session:
        return session.get_one(Job, job_id)


def test_a_running_job_whose_lease_expired_is_queued_again_and_sent(
    sessions: sessionmaker[Session], settings: Settings, make_job: MakeJob
) -> None:
    """A worker killed whole (or by the hard time limit) used to leave its job running for an hour."""
    now = datetime.now(UTC)
    dead = make_job(status="running", lease_owner="dead", lease_expires_at=now - timedelta(seconds=1))
    alive = make_job(status="running", lease_owner="alive", lease_expires_at=now + timedelta(seconds=30))
    sent = Sent()
    report = _reap(sessions, settings, sent, jobs=[dead, alive])
    assert report == ReapReport(requeued=1, resent=1)
    assert sent.jobs == [str(dead)]
    job = _job(sessions, dead)
    assert (job.status, job.attempts, job.lease_owner) == ("queued", 1, None)
    assert job.sent_at is not None
    assert _job(sessions, alive).status == "running"


def test_a_job_that_keeps_dying_fails_as_too_many_attempts(
    sessions: sessionmaker[Session], settings: Settings, make_job: MakeJob
) -> None:
    expired = datetime.now(UTC) - timedelta(seconds=1)
    job_id = make_job(
        status="running",
        attempts=settings.job_max_attempts - 1,
        lease_owner="dead",
        lease_expires_at=expired,
    )
    sent = Sent()
    _reap(sessions, settings, sent, jobs=[job_id])
    job = _job(sessions, job_id)
    assert (job.status, job.reason, job.attempts, sent.jobs) == (
        "failed",
        "too_many_attempts",
        settings.job_max_attempts,
        [],
    )


def test_queued_jobs_whose_message_was_lost_are_sent_again_once_the_queue_is_empty(
    sessions: sessionmaker[Session], settings: Settings, make_job: MakeJob
) -> None:
    """The broker losing its data used to leave queued jobs queued for ever."""
    now = datetime.now(UTC)
    stale = make_job(status="queued", sent_at=now - timedelta(seconds=settings.job_resend_after_s + 1))
    recent = make_job(status="queued", sent_at=now)
    sent = Sent()
    # Messages still waiting in the queue: a stale job may just be behind them.
    _reap(sessions, settings, sent, jobs=[stale, recent], queue_length=3)
    assert sent.jobs == []
    _reap(sessions, settings, sent, jobs=[stale, recent], queue_length=0)
    assert sent.jobs == [str(stale)]
    # Marked sent: the next pass leaves it alone.
    _reap(sessions, settings, sent, jobs=[stale, recent], queue_length=0)
    assert sent.jobs == [str(stale)]


def test_unsent_jobs_are_sent_after_the_grace_and_deferred_ones_when_due(
    sessions: sessionmaker[Session], settings: Settings, make_job: MakeJob
) -> None:
    now = datetime.now(UTC)
    unsent = make_job(status="queued", created_at=now)
    deferred = make_job(status="queued", created_at=now, next_attempt_at=now + timedelta(seconds=30))
    sent = Sent()
    _reap(sessions, settings, sent, jobs=[unsent, deferred], queue_length=5, now=now)
    assert sent.jobs == []  # the submitter sends right after its commit
    later = now + timedelta(seconds=UNSENT_GRACE_S + 1)
    _reap(sessions, settings, sent, jobs=[unsent, deferred], queue_length=5, now=later)
    assert sent.jobs == [str(unsent)]
    _reap(sessions, settings, sent, jobs=[unsent, deferred], queue_length=5, now=now + timedelta(seconds=31))
    assert sent.jobs == [str(unsent), str(deferred)]


def test_a_backfill_stuck_listing_is_resumed(sessions: sessionmaker[Session], settings: Settings) -> None:
    """A backfill whose first message could not be sent used to stay `listing` for ever."""
    idle = datetime.now(UTC) - timedelta(seconds=settings.backfill_resume_after_s + 1)
    with sessions.begin() as session:
        stuck = Backfill(source_uri="s3://b/p", status="listing", updated_at=idle)
        busy = Backfill(source_uri="s3://b/q", status="listing", updated_at=datetime.now(UTC))
        done = Backfill(source_uri="s3://b/r", status="completed", updated_at=idle)
        session.add_all([stuck, busy, done])
        session.flush()
        ids = [stuck.id, busy.id, done.id]
    sent = Sent()
    assert _reap(sessions, settings, sent, backfills=ids) == ReapReport(backfills_resumed=1)
    assert sent.backfills == [str(ids[0])]
    _reap(sessions, settings, sent, backfills=ids)
    assert sent.backfills == [str(ids[0])]  # its idle clock restarted


def test_a_scoped_pass_touches_no_other_job(
    sessions: sessionmaker[Session], settings: Settings, make_job: MakeJob
) -> None:
    expired = datetime.now(UTC) - timedelta(seconds=1)
    other = make_job(status="running", lease_owner="dead", lease_expires_at=expired)
    sent = Sent()
    assert _reap(sessions, settings, sent, jobs=[uuid.uuid4()]) == ReapReport()
    assert _job(sessions, other).status == "running" and sent.jobs == []
