from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.core.config import Settings
from services.core.indexing import jobs
from services.core.indexing.jobs import ClaimOutcome, VideoSpec
from services.core.indexing.reasons import FailureReason
from services.core.models import Job, Video, WebhookDelivery
from services.core.versions import ModelVersion
from tests.services.indexing.conftest import MakeJob

HOOK = {"webhook_url": "http://127.0.0.1:9/hook"}


def _job(sessions: sessionmaker[Session], job_id: uuid.UUID) -> Job:
    with sessions() as session:
        return session.get_one(Job, job_id)


def _claim(
    sessions: sessionmaker[Session], settings: Settings, job_id: uuid.UUID, owner: str
) -> ClaimOutcome:
    with sessions.begin() as session:
        return jobs.claim(session=session, job_id=job_id, owner=owner, settings=settings).outcome


def _deliveries(sessions: sessionmaker[Session], job_id: uuid.UUID) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(WebhookDelivery.outcome).where(WebhookDelivery.job_id == job_id)))


def test_duplicate_deliveries_of_a_running_job_do_nothing_and_burn_no_attempt(
    sessions: sessionmaker[Session], settings: Settings, make_job: MakeJob
) -> None:
    """Four concurrent deliveries used to mark a healthy running job too_many_attempts and fire a
    false "failed" webhook: only the lease holder runs it now."""
    job_id = make_job(options=HOOK)
    assert _claim(sessions, settings, job_id, "worker-a") is ClaimOutcome.claimed
    outcomes = [_claim(sessions, settings, job_id, f"worker-{n}") for n in "bcde"]
    assert outcomes == [ClaimOutcome.busy] * 4
    job = _job(sessions, job_id)
    assert (job.status, job.attempts, job.lease_owner, job.reason) == ("running", 0, "worker-a", None)
    assert _deliveries(sessions, job_id) == []
    # The next try of a delivery that met an outage it could not record takes its lease over.
    with sessions.begin() as session:
        again = jobs.claim(
            session=session, job_id=job_id, owner="worker-a:1", settings=settings, previous_owner="worker-a"
        )
        assert (again.outcome, again.job and again.job.lease_owner, again.job and again.job.attempts) == (
            ClaimOutcome.claimed,
            "worker-a:1",
            0,
        )
    # That try redelivered after its worker died finds its own lease: the lost run counts.
    with sessions.begin() as session:
        lost = jobs.claim(
            session=session, job_id=job_id, owner="worker-a:1", settings=settings, previous_owner="worker-a"
        )
        assert (lost.outcome, lost.job and lost.job.attempts) == (ClaimOutcome.claimed, 1)


def test_a_message_redelivered_after_its_worker_died_counts_the_lost_run(
    sessions: sessionmaker[Session], settings: Settings, make_job: MakeJob
) -> None:
    """A video that kills its worker each time must not loop on redelivery: the redelivered message
    (same owner) finds its own live lease, counts the lost run, and at the cap the job fails."""
    job_id = make_job()
    outcomes = [
        _claim(sessions, settings, job_id, "host:task-1") for _ in range(settings.job_max_attempts + 1)
    ]
    assert outcomes == [ClaimOutcome.claimed] * settings.job_max_attempts + [ClaimOutcome.failed]
    job = _job(sessions, job_id)
    assert (job.status, job.reason, job.attempts) == (
        "failed",
        "too_many_attempts",
        settings.job_max_attempts,
    )


def test_an_expired_lease_is_taken_over_and_counts_one_attempt(
    sessions: sessionmaker[Session], settings: Settings, make_job: MakeJob
) -> None:
    expired = datetime.now(UTC) - timedelta(seconds=1)
    job_id = make_job(status="running", lease_owner="dead", lease_expires_at=expired)
    assert _claim(sessions, settings, job_id, "alive") is ClaimOutcome.claimed
    job = _job(sessions, job_id)
    assert (job.status, job.attempts, job.lease_owner) == ("running", 1, "alive")
    assert job.lease_expires_at is not None
    lease_s = (jobs.as_utc(job.lease_expires_at) - datetime.now(UTC)).total_seconds()
    assert settings.job_lease_s - 5 < lease_s <= settings.job_lease_s


def test_finished_and_missing_jobs_are_left_alone(
    sessions: sessionmaker[Session], settings: Settings, make_job: MakeJob
) -> None:
    done = make_job(status="succeeded", attempts=0)
    assert _claim(sessions, settings, done, "w") is ClaimOutcome.finished
    assert _claim(sessions, settings, uuid.uuid4(), "w") is ClaimOutcome.missing
    assert _job(sessions, done).status == "succeeded"


def test_heartbeat_renews_only_the_owners_lease(
    sessions: sessionmaker[Session], settings: Settings, make_job: MakeJob
) -> None:
    job_id = make_job()
    _claim(sessions, settings, job_id, "owner")
    with sessions.begin() as session:
        session.get_one(Job, job_id).lease_expires_at = datetime.now(UTC) + timedelta(seconds=1)
    with sessions.begin() as session:
        assert jobs.heartbeat(session=session, job_id=job_id, owner="owner", settings=settings, progress=0.5)
        assert not jobs.heartbeat(session=session, job_id=job_id, owner="other", settings=settings)
    job = _job(sessions, job_id)
    assert job.progress == 0.5 and job.lease_expires_at is not None
    assert jobs.as_utc(job.lease_expires_at) > datetime.now(UTC) + timedelta(seconds=settings.job_lease_s - 5)


def test_defer_backs_off_exponentially_with_a_cap_until_the_deadline(
    sessions: sessionmaker[Session], settings: Settings, make_job: MakeJob
) -> None:
    job_id = make_job()
    delays = []
    for _ in range(5):
        assert _claim(sessions, settings, job_id, "w") is ClaimOutcome.claimed
        start = datetime.now(UTC)
        with sessions.begin() as session:
            row = jobs.defer(
                session=session,
                job_id=job_id,
                error=FailureReason.inference_unavailable,
                detail="connection refused",
                settings=settings,
                owner="w",
            )
            assert row is not None and row.next_attempt_at is not None
            delays.append((jobs.as_utc(row.next_attempt_at) - start).total_seconds())
        assert _claim(sessions, settings, job_id, "w") is ClaimOutcome.not_due
        with sessions.begin() as session:
            session.get_one(Job, job_id).next_attempt_at = datetime.now(UTC) - timedelta(seconds=1)
    # 5, 10, 20, 40, 40 s, each with jitter in 0.8..1.
    for delay, full in zip(delays, (5, 10, 20, 40, 40), strict=True):
        assert 0.8 * full - 0.5 <= delay <= full + 0.5
    job = _job(sessions, job_id)
    assert (job.status, job.reason, job.attempts, job.deferrals, job.sent_at) == (
        "queued",
        "inference_unavailable",
        0,
        5,
        None,
    )
    with sessions.begin() as session:
        session.get_one(Job, job_id).deadline_at = datetime.now(UTC) - timedelta(seconds=1)
    assert _claim(sessions, settings, job_id, "w") is ClaimOutcome.failed
    assert (_job(sessions, job_id).status, _job(sessions, job_id).reason) == ("failed", "deadline_exceeded")


def test_a_time_limit_defers_and_counts_an_attempt_up_to_the_cap(
    sessions: sessionmaker[Session], settings: Settings, make_job: MakeJob
) -> None:
    job_id = make_job(attempts=settings.job_max_attempts - 2)
    for expected in ("queued", "failed"):
        _claim(sessions, settings, job_id, "w")
        with sessions.begin() as session:
            row = jobs.defer(
                session=session,
                job_id=job_id,
                error=FailureReason.time_limit,
                detail="soft time limit",
                settings=settings,
                owner="w",
                count_attempt=True,
            )
            assert row is not None and row.status == expected
        with sessions.begin() as session:
            session.get_one(Job, job_id).next_attempt_at = None
    job = _job(sessions, job_id)
    assert (job.reason, job.attempts) == ("too_many_attempts", settings.job_max_attempts)
    assert job.detail == f"time_limit {settings.job_max_attempts} times: soft time limit"


def test_succeed_and_fail_write_one_webhook_per_outcome(
    sessions: sessionmaker[Session], settings: Settings, make_job: MakeJob
) -> None:
    job_id = make_job(options=HOOK)
    _claim(sessions, settings, job_id, "w")
    with sessions.begin() as session:
        row = jobs.held(session=session, job_id=job_id, owner="w")
        assert row is not None
        jobs.succeed(session=session, job=row, labels=[{"label": "a", "score": 0.5}])
    # A late failure of another run changes nothing once the job succeeded.
    with sessions.begin() as session:
        assert jobs.fail(session=session, job_id=job_id, reason=FailureReason.corrupt, detail="x") is None
    assert _deliveries(sessions, job_id) == ["succeeded"]
    with sessions() as session:
        payload = session.scalars(
            select(WebhookDelivery.payload).where(WebhookDelivery.job_id == job_id)
        ).one()
    assert payload["labels"] == [{"label": "a", "score": 0.5}] and payload["status"] == "succeeded"

    other = make_job(options=HOOK)
    _claim(sessions, settings, other, "w")
    with sessions.begin() as session:
        assert (
            jobs.fail(session=session, job_id=other, reason=FailureReason.corrupt, detail="bad", owner="x")
            is None
        )
        failed = jobs.fail(
            session=session, job_id=other, reason=FailureReason.corrupt, detail="bad", owner="w"
        )
        assert failed is not None and (failed.status, failed.attempts) == ("failed", 1)
    assert _deliveries(sessions, other) == ["failed"]


def _spec(**fields: str) -> VideoSpec:
    return VideoSpec(sha256=hashlib.sha256(uuid.uuid4().bytes).hexdigest(), **fields)  # type: ignore[arg-type]


def _submit(
    sessions: sessionmaker[Session], settings: Settings, spec: VideoSpec, **options: object
) -> jobs.Submission:
    with sessions.begin() as session:
        return jobs.submit(
            session=session,
            video=spec,
            model=ModelVersion(settings.model_name, settings.model_version),
            options=dict(options),
        )


def test_submit_creates_once_and_dedupes_by_content(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    spec = _spec()
    first = _submit(sessions, settings, spec, top_k=3)
    again = _submit(sessions, settings, spec, top_k=4)
    assert (first.created, first.duplicate, first.send) == (True, False, True)
    assert (again.created, again.duplicate, again.job.id) == (False, True, first.job.id)
    assert _job(sessions, first.job.id).options == {"top_k": 3}


@pytest.mark.parametrize(
    ("fields", "send"),
    [
        # Queued after a failed run (attempts >= 1): its message may be gone; it is sent again.
        ({"status": "queued", "attempts": 1}, True),
        # Running, its worker dead (lease expired): sent again so that a worker takes it over.
        ({"status": "running", "lease_owner": "dead", "lease_expires_at": "expired"}, True),
        # Running under a live lease: left alone.
        ({"status": "running", "lease_owner": "alive", "lease_expires_at": "live"}, False),
        ({"status": "succeeded"}, False),
    ],
)
def test_submitting_again_wakes_up_a_job_that_may_have_lost_its_message(
    sessions: sessionmaker[Session], settings: Settings, fields: dict[str, object], send: bool
) -> None:
    """A job left queued with attempts >= 1, or running, used never to be re-sent."""
    spec = _spec()
    job_id = _submit(sessions, settings, spec).job.id
    offsets = {"expired": -1, "live": 60}
    with sessions.begin() as session:
        job = session.get_one(Job, job_id)
        for name, value in fields.items():
            if value in offsets:
                value = datetime.now(UTC) + timedelta(seconds=offsets[str(value)])
            setattr(job, name, value)
    again = _submit(sessions, settings, spec)
    assert (again.send, again.requeued, again.job.status) == (send, False, fields["status"])


def test_requeue_through_submit_resets_a_failed_job_with_new_options(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    spec = _spec()
    job_id = _submit(sessions, settings, spec, **HOOK).job.id
    _claim(sessions, settings, job_id, "w")
    with sessions.begin() as session:
        jobs.fail(session=session, job_id=job_id, reason=FailureReason.corrupt, detail="bad", owner="w")
    assert _deliveries(sessions, job_id) == ["failed"]
    again = _submit(sessions, settings, spec, top_k=2)
    job = _job(sessions, job_id)
    assert (again.send, again.requeued) == (True, True)
    assert (job.status, job.reason, job.attempts, job.options, job.finished_at) == (
        "queued",
        None,
        0,
        {"top_k": 2},
        None,
    )
    assert _deliveries(sessions, job_id) == []  # the new run notifies its own outcome


def test_an_s3_source_with_a_new_etag_is_indexed_again(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    uri = f"s3://bucket/{uuid.uuid4()}.mp4"
    first = _submit(sessions, settings, VideoSpec(source_uri=uri, source_etag="e1"))
    with sessions.begin() as session:
        job = session.get_one(Job, first.job.id)
        job.status = "succeeded"
        video = session.get_one(Video, job.video_id)
        video.source_etag, video.sha256 = "e1", hashlib.sha256(uri.encode()).hexdigest()
    same = _submit(sessions, settings, VideoSpec(source_uri=uri, source_etag="e1"))
    changed = _submit(sessions, settings, VideoSpec(source_uri=uri, source_etag="e2"))
    assert (same.send, changed.send, changed.requeued) == (False, True, True)
    with sessions() as session:
        assert session.get_one(Video, first.video.id).sha256 is None  # other bytes: hashed again


def test_a_local_file_that_now_holds_other_bytes_moves_its_uri(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    uri = f"file:///videos/{uuid.uuid4()}.mp4"
    old = _submit(sessions, settings, _spec(source_uri=uri))
    new = _submit(sessions, settings, _spec(source_uri=uri))
    assert new.video.id != old.video.id
    with sessions() as session:
        assert session.get_one(Video, old.video.id).source_uri is None
        assert session.get_one(Video, new.video.id).source_uri == uri


def test_cancel_fails_only_jobs_no_worker_started(
    sessions: sessionmaker[Session], settings: Settings, make_job: MakeJob
) -> None:
    waiting = make_job()
    started = make_job(status="running", started_at=datetime.now(UTC))
    with sessions.begin() as session:
        n = jobs.cancel(
            session=session, jobs=select(Job.id).where(Job.id.in_([waiting, started])), detail="stop"
        )
    assert n == 1
    assert (_job(sessions, waiting).status, _job(sessions, waiting).reason) == ("failed", "cancelled")
    assert _job(sessions, started).status == "running"
