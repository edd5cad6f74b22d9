"""Backfill listing against a moto S3 server, Postgres and Redis (no workers: jobs stay queued)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import redis
from pydantic import SecretStr
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.core import backfills
from services.core.backfills import (
    BackfillCounts,
    BackfillFilters,
    BackfillRunner,
    BackfillStatus,
    ListedObject,
    RunOutcome,
)
from services.core.config import Settings
from services.core.db import create_db_engine, session_factory
from services.core.models import (
    Backfill,
    Job,
    JobStatus,
    LabelSegment,
    SourceObject,
    Video,
    VideoLabel,
    WindowLabel,
)
from services.core.queue import INDEX_QUEUE, INDEX_VIDEO_TASK, create_producer, enqueue_index_video
from services.core.storage import s3_client
from tests.platform_servers import free_port, moto_client

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _obj(key: str, size: int = 10, modified: datetime | None = NOW) -> ListedObject:
    return ListedObject(key=key, etag="e", size=size, last_modified=modified)


def test_filters_by_extension_size_and_modified_since() -> None:
    default = BackfillFilters()
    assert default.accepts(_obj("a/clip.MP4"))
    assert default.accepts(_obj("a/clip.webm"))
    assert not default.accepts(_obj("a/notes.txt"))
    assert not default.accepts(_obj("a/noext"))
    assert not default.accepts(_obj("a/folder.mp4/"))  # folder marker
    assert not default.accepts(_obj("a/empty.mp4", size=0))
    assert BackfillFilters(extensions=None).accepts(_obj("a/notes.txt"))
    assert BackfillFilters(extensions=("txt",)).accepts(_obj("a/notes.txt"))
    sized = BackfillFilters(min_size=5, max_size=20)
    assert [sized.accepts(_obj("x.mp4", size=n)) for n in (4, 5, 20, 21)] == [False, True, True, False]
    since = BackfillFilters(modified_since=NOW)
    assert since.accepts(_obj("x.mp4", modified=NOW))
    assert not since.accepts(_obj("x.mp4", modified=NOW - timedelta(seconds=1)))
    assert not since.accepts(_obj("x.mp4", modified=None))
    for f in (default, BackfillFilters(extensions=None), sized, since):
        assert BackfillFilters.from_dict(json.loads(json.dumps(f.to_dict()))) == f


def test_parse_prefix_uri() -> None:
    assert backfills.parse_prefix_uri("s3://bkt/a/b/") == ("bkt", "a/b/")
    assert backfills.parse_prefix_uri("s3://bkt") == ("bkt", "")
    with pytest.raises(backfills.BackfillError):
        backfills.parse_prefix_uri("https://bkt/a")


@pytest.fixture()
def settings(migrated_postgres_url: str, moto_endpoint: str, s3_bucket: str, redis_url: str) -> Settings:
    return Settings(
        database_url=migrated_postgres_url,
        redis_url=redis_url,
        s3_endpoint_url=moto_endpoint,
        s3_bucket=s3_bucket,
        s3_access_key_id=SecretStr("test"),
        s3_secret_access_key=SecretStr("test"),
        model_version=f"v-{uuid.uuid4().hex[:8]}",  # this test's own index
        backfill_page_size=7,
        backfill_max_queued=1000,
        backfill_poll_s=0.01,
    )


@pytest.fixture()
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(settings.resolved_database_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture()
def s3(settings: Settings) -> Any:
    return moto_client(settings.s3_endpoint_url or "")


def _queued_job_ids(broker: redis.Redis) -> list[str]:
    """Job ids of the index_video messages on the broker's queue, oldest first."""
    ids = []
    for raw in reversed(cast(list[bytes], broker.lrange(INDEX_QUEUE, 0, -1))):
        headers = json.loads(raw)["headers"]
        assert headers["task"] == INDEX_VIDEO_TASK
        ids.append(json.loads(headers["argsrepr"].replace("'", '"'))[0])
    return ids


def _runner(settings: Settings, sessions: sessionmaker[Session], **overrides: Any) -> BackfillRunner:
    producer = create_producer(settings)
    return replace(backfills.build_runner(settings, sessions, producer=producer), **overrides)


def _start(
    settings: Settings, sessions: sessionmaker[Session], uri: str, filters: BackfillFilters | None = None
) -> uuid.UUID:
    with sessions.begin() as session:
        return backfills.create_backfill(
            session, settings, source_uri=uri, filters=filters or BackfillFilters(), options={"top_k": 2}
        ).id


def _counts(sessions: sessionmaker[Session], backfill_id: uuid.UUID) -> tuple[str, BackfillCounts]:
    with sessions.begin() as session:
        row = session.get_one(Backfill, backfill_id)
        counts = backfills.refresh(session, row)
        return row.status, counts


def _finish_jobs(sessions: sessionmaker[Session], backfill_id: uuid.UUID, status: str = "succeeded") -> None:
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.backfill_id == backfill_id).values(status=status))


def _put(s3: Any, bucket: str, keys: list[str], body: bytes = b"\x00\x00\x00\x18ftypisom") -> None:
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=body + key.encode())


VIDEO_KEYS = [f"in/videos/{i:03d}.mp4" for i in range(20)]
OTHER_KEYS = ["in/videos/readme.txt", "in/videos/thumb.jpg", "in/videos/sub/"]


@pytest.fixture()
def prefix(s3: Any, s3_bucket: str) -> str:
    _put(s3, s3_bucket, VIDEO_KEYS + OTHER_KEYS)
    s3.put_object(Bucket=s3_bucket, Key="in/videos/empty.mp4", Body=b"")
    s3.put_object(Bucket=s3_bucket, Key="in/elsewhere.mp4", Body=b"x")  # outside the prefix
    return f"s3://{s3_bucket}/in/videos/"


def test_backfill_enqueues_one_job_per_video_and_a_rerun_none(
    settings: Settings, sessions: sessionmaker[Session], broker: redis.Redis, prefix: str
) -> None:
    first = _start(settings, sessions, prefix)
    assert _runner(settings, sessions).run(first) is RunOutcome.listed
    status, counts = _counts(sessions, first)
    assert status == BackfillStatus.indexing
    assert counts == BackfillCounts(listed=24, skipped=4, queued=20, succeeded=0, failed=0)
    with sessions() as session:
        jobs = session.execute(
            select(Job.id, Video.source_uri, Job.options, Job.status)
            .join(Video, Video.id == Job.video_id)
            .where(Job.backfill_id == first)
        ).all()
        row = session.get_one(Backfill, first)
        assert row.cursor_key == "in/videos/thumb.jpg"  # the last key listed
    bucket = settings.s3_bucket
    assert sorted(uri for _, uri, _, _ in jobs) == [f"s3://{bucket}/{k}" for k in VIDEO_KEYS]
    assert {(str(o), str(s)) for _, _, o, s in jobs} == {("{'top_k': 2}", "queued")}
    assert sorted(_queued_job_ids(broker)) == sorted(str(job_id) for job_id, _, _, _ in jobs)

    # Unchanged objects: a second backfill of the prefix, and one of an overlapping prefix, add nothing.
    second = _start(settings, sessions, prefix)
    assert _runner(settings, sessions).run(second) is RunOutcome.listed
    assert _counts(sessions, second)[1] == BackfillCounts(24, 24, 0, 0, 0)
    overlap = _start(settings, sessions, f"s3://{bucket}/in/")
    assert _runner(settings, sessions).run(overlap) is RunOutcome.listed
    assert _counts(sessions, overlap)[1] == BackfillCounts(25, 24, 1, 0, 0)  # in/elsewhere.mp4 is new
    assert len(_queued_job_ids(broker)) == 21

    # The first backfill completes once its jobs have finished, and its counts stay frozen.
    _finish_jobs(sessions, first)
    assert _counts(sessions, first) == (BackfillStatus.completed, BackfillCounts(24, 4, 20, 20, 0))
    _finish_jobs(sessions, first, "failed")
    assert _counts(sessions, first) == (BackfillStatus.completed, BackfillCounts(24, 4, 20, 20, 0))


def test_a_changed_object_is_indexed_again_under_its_job(
    settings: Settings, sessions: sessionmaker[Session], broker: redis.Redis, prefix: str, s3: Any
) -> None:
    first = _start(settings, sessions, prefix)
    _runner(settings, sessions).run(first)
    _finish_jobs(sessions, first)
    _put(s3, settings.s3_bucket, [VIDEO_KEYS[3]], body=b"\x00\x00\x00\x18ftypisom new bytes")
    broker.delete(INDEX_QUEUE)
    second = _start(settings, sessions, prefix)
    _runner(settings, sessions).run(second)
    assert _counts(sessions, second)[1] == BackfillCounts(24, 23, 1, 0, 0)
    with sessions() as session:
        job = session.execute(
            select(Job).join(Video).where(Video.source_uri == f"s3://{settings.s3_bucket}/{VIDEO_KEYS[3]}")
        ).scalar_one()
        assert (job.status, job.backfill_id) == (JobStatus.queued, second)
        assert session.scalar(select(func.count()).select_from(Job).where(Job.video_id == job.video_id)) == 1
        etags = session.scalar(
            select(func.count())
            .select_from(SourceObject)
            .where(SourceObject.bucket == settings.s3_bucket, SourceObject.key == VIDEO_KEYS[3])
        )
    assert etags == 2
    assert _queued_job_ids(broker) == [str(job.id)]


def test_an_object_submitted_through_the_api_is_adopted(
    settings: Settings, sessions: sessionmaker[Session], broker: redis.Redis, prefix: str
) -> None:
    with sessions.begin() as session:
        video = Video(source_uri=f"s3://{settings.s3_bucket}/{VIDEO_KEYS[0]}")
        session.add(video)
        session.flush()
        session.add(
            Job(video_id=video.id, model_name=settings.model_name, model_version=settings.model_version)
        )
    backfill_id = _start(settings, sessions, prefix)
    _runner(settings, sessions).run(backfill_id)
    assert _counts(sessions, backfill_id)[1] == BackfillCounts(24, 5, 19, 0, 0)
    assert len(_queued_job_ids(broker)) == 19


def test_backpressure_caps_the_queue_and_resumes_from_the_cursor(
    settings: Settings, sessions: sessionmaker[Session], broker: redis.Redis, prefix: str
) -> None:
    capped = settings.model_copy(update={"backfill_max_queued": 6})
    backfill_id = _start(capped, sessions, prefix)
    seen: list[str] = []
    for _ in range(3):
        assert _runner(capped, sessions).run(backfill_id, block=False) is RunOutcome.throttled
        assert broker.llen(INDEX_QUEUE) == 6
        seen += _queued_job_ids(broker)
        broker.delete(INDEX_QUEUE)  # what the workers do
    assert _runner(capped, sessions).run(backfill_id, block=False) is RunOutcome.listed
    seen += _queued_job_ids(broker)
    assert len(seen) == len(set(seen)) == 20
    assert _counts(sessions, backfill_id)[1] == BackfillCounts(24, 4, 20, 0, 0)


def test_a_blocking_run_waits_for_the_queue_to_drain(
    settings: Settings, sessions: sessionmaker[Session], broker: redis.Redis, prefix: str
) -> None:
    capped = settings.model_copy(update={"backfill_max_queued": 6})
    backfill_id = _start(capped, sessions, prefix)
    drained: list[str] = []

    def drain(_seconds: float) -> None:
        drained.extend(_queued_job_ids(broker))
        broker.delete(INDEX_QUEUE)

    assert _runner(capped, sessions, sleep=drain).run(backfill_id) is RunOutcome.listed
    drained += _queued_job_ids(broker)
    assert len(drained) == len(set(drained)) == 20


def test_jobs_stored_but_not_sent_are_sent_on_resume(
    settings: Settings, sessions: sessionmaker[Session], broker: redis.Redis, prefix: str
) -> None:
    """A runner that dies between the commit and the broker leaves no job behind."""
    backfill_id = _start(settings, sessions, prefix)
    producer = create_producer(settings)
    sent = 0

    def send_then_die(job_id: str) -> None:
        nonlocal sent
        if sent == 10:
            raise ConnectionError("broker went away")
        sent += 1
        enqueue_index_video(producer, job_id)

    with pytest.raises(ConnectionError):
        _runner(settings, sessions, send=send_then_die).run(backfill_id)
    assert _runner(settings, sessions).run(backfill_id) is RunOutcome.listed
    with sessions() as session:
        job_ids = {str(j) for j in session.scalars(select(Job.id).where(Job.backfill_id == backfill_id))}
        unsent = session.scalar(
            select(func.count())
            .select_from(SourceObject)
            .where(SourceObject.backfill_id == backfill_id, SourceObject.enqueued_at.is_(None))
        )
    assert len(job_ids) == 20 and unsent == 0
    queued = _queued_job_ids(broker)
    assert set(queued) == job_ids  # the 10 sent before the failure were sent again: harmless
    assert _counts(sessions, backfill_id)[1] == BackfillCounts(24, 4, 20, 0, 0)


def test_one_runner_per_backfill(settings: Settings, sessions: sessionmaker[Session], prefix: str) -> None:
    backfill_id = _start(settings, sessions, prefix)
    runner = _runner(settings, sessions)
    with runner._lock(backfill_id) as held:
        assert held
        assert _runner(settings, sessions).run(backfill_id) is RunOutcome.busy
    assert runner.run(backfill_id) is RunOutcome.listed


def test_cancel_fails_the_jobs_not_started(
    settings: Settings, sessions: sessionmaker[Session], broker: redis.Redis, prefix: str
) -> None:
    backfill_id = _start(settings, sessions, prefix)
    _runner(settings, sessions).run(backfill_id)
    with sessions.begin() as session:
        started = session.scalars(select(Job).where(Job.backfill_id == backfill_id).limit(2)).all()
        started[0].status, started[0].attempts = JobStatus.running, 1
        started[1].status = JobStatus.succeeded
    with sessions.begin() as session:
        backfills.cancel(session, session.get_one(Backfill, backfill_id))
    assert _counts(sessions, backfill_id) == (BackfillStatus.cancelled, BackfillCounts(24, 4, 20, 1, 18))
    with sessions() as session:
        by_reason, failed = backfills.failures(session, backfill_id, limit=3)
    assert by_reason == {"cancelled": 18}
    assert [f.reason for f in failed] == ["cancelled"] * 3
    assert _runner(settings, sessions).run(backfill_id) is RunOutcome.stopped


def test_a_prefix_that_cannot_be_listed_fails_the_backfill(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    backfill_id = _start(settings, sessions, "s3://no-such-bucket-here/x/")
    assert _runner(settings, sessions).run(backfill_id) is RunOutcome.stopped
    with sessions() as session:
        row = session.get_one(Backfill, backfill_id)
        assert (row.status, row.reason) == (BackfillStatus.failed, "NoSuchBucket")


def test_an_unreachable_s3_makes_a_worker_step_come_back_later(
    settings: Settings, sessions: sessionmaker[Session], prefix: str
) -> None:
    backfill_id = _start(settings, sessions, prefix)
    down = settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"})
    runner = replace(_runner(down, sessions), s3=s3_client(down))
    assert backfills.advance(runner, backfill_id) == ("unavailable", True)
    status, counts = _counts(sessions, backfill_id)
    assert (status, counts.listed) == (BackfillStatus.listing, 0)
    # Back: the next step lists everything.
    assert backfills.advance(_runner(settings, sessions), backfill_id)[0] == "listed"
    assert _counts(sessions, backfill_id)[1].queued == len(VIDEO_KEYS)


def test_results_are_exported_as_json_lines_once_every_job_has_finished(
    settings: Settings, sessions: sessionmaker[Session], broker: redis.Redis, prefix: str, s3: Any
) -> None:
    bucket = settings.s3_bucket
    with sessions.begin() as session:
        backfill_id = backfills.create_backfill(
            session,
            settings,
            source_uri=prefix,
            filters=BackfillFilters(),
            output_uri=f"s3://{bucket}/out/",
        ).id
    runner = _runner(settings, sessions)
    assert backfills.advance(runner, backfill_id) == ("listed", True)  # jobs still queued
    assert backfills.advance(runner, backfill_id) == ("stopped", True)
    with sessions.begin() as session:
        jobs = session.scalars(
            select(Job).join(Video).where(Job.backfill_id == backfill_id).order_by(Video.source_uri)
        ).all()
        first = jobs[0]
        model = {"model_name": settings.model_name, "model_version": settings.model_version}
        session.add_all(
            [
                VideoLabel(video_id=first.video_id, label="b", label_index=1, score=0.5, rank=2, **model),
                VideoLabel(video_id=first.video_id, label="a", label_index=0, score=0.6, rank=1, **model),
            ]
            + [
                WindowLabel(
                    video_id=first.video_id, window_index=w, start_ms=4000 * w, end_ms=4000 * (w + 1),
                    label=label, label_index=index, score=score, rank=1, **model,
                )
                for w, (label, index, score) in enumerate([("a", 0, 0.7), ("b", 1, 0.5)])
            ]
            + [
                LabelSegment(
                    video_id=first.video_id, label=label, label_index=index, start_ms=start,
                    end_ms=start + 4000, windows=1, score=score, mean_score=score, **model,
                )
                for start, (label, index, score) in [(4000, ("b", 1, 0.5)), (0, ("a", 0, 0.7))]
            ]
        )  # fmt: skip
        session.get_one(Video, first.video_id).duration_s = 8.0
        first.status = JobStatus.succeeded
        for job in jobs[1:]:
            job.status, job.reason = JobStatus.failed, "not_a_video"
    assert backfills.advance(runner, backfill_id) == ("exported", False)
    with sessions() as session:
        assert session.get_one(Backfill, backfill_id).exported_at is not None

    listing = s3.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]
    assert [o["Key"] for o in listing] == [f"out/{k}.jsonl" for k in VIDEO_KEYS]
    lines = (
        s3.get_object(Bucket=bucket, Key=f"out/{VIDEO_KEYS[0]}.jsonl")["Body"].read().decode().splitlines()
    )
    etag = s3.head_object(Bucket=bucket, Key=VIDEO_KEYS[0])["ETag"].strip('"')
    version = {"name": settings.model_name, "version": settings.model_version}
    assert [json.loads(line) for line in lines] == [
        {
            "source_uri": f"s3://{bucket}/{VIDEO_KEYS[0]}",
            "etag": etag,
            "status": "succeeded",
            "reason": None,
            "model": version,
            "duration_s": 8.0,
            "labels": [{"label": "a", "index": 0, "score": 0.6}, {"label": "b", "index": 1, "score": 0.5}],
            "segments": [  # by start time
                {"label": "a", "start_ms": 0, "end_ms": 4000, "windows": 1, "score": 0.7, "mean_score": 0.7},
                {
                    "label": "b",
                    "start_ms": 4000,
                    "end_ms": 8000,
                    "windows": 1,
                    "score": 0.5,
                    "mean_score": 0.5,
                },
            ],
        },
        {"window": 0, "start_ms": 0, "end_ms": 4000, "labels": [{"label": "a", "index": 0, "score": 0.7}]},
        {"window": 1, "start_ms": 4000, "end_ms": 8000, "labels": [{"label": "b", "index": 1, "score": 0.5}]},
    ]
    failed = json.loads(s3.get_object(Bucket=bucket, Key=f"out/{VIDEO_KEYS[1]}.jsonl")["Body"].read())
    assert (failed["status"], failed["reason"], failed["labels"], failed["segments"]) == (
        "failed",
        "not_a_video",
        [],
        [],
    )


def test_the_export_has_every_listed_object_whoever_indexed_it(
    settings: Settings, sessions: sessionmaker[Session], broker: redis.Redis, prefix: str, s3: Any
) -> None:
    bucket = settings.s3_bucket
    # An earlier backfill indexed the first ten keys; the API indexed the eleventh.
    with sessions.begin() as session:
        earlier = backfills.create_backfill(
            session, settings, source_uri=f"s3://{bucket}/in/videos/00", filters=BackfillFilters()
        ).id
    runner = _runner(settings, sessions)
    assert backfills.advance(runner, earlier)[0] == "listed"
    _finish_jobs(sessions, earlier)
    with sessions.begin() as session:
        video = Video(source_uri=f"s3://{bucket}/{VIDEO_KEYS[10]}", filename="010.mp4")
        session.add(video)
        session.flush()
        model = {"model_name": settings.model_name, "model_version": settings.model_version}
        session.add(Job(video_id=video.id, status=JobStatus.succeeded, **model))

    with sessions.begin() as session:
        later = backfills.create_backfill(
            session, settings, source_uri=prefix, filters=BackfillFilters(), output_uri=f"s3://{bucket}/all/"
        ).id
    assert backfills.advance(runner, later)[0] == "listed"
    _finish_jobs(sessions, later)
    assert backfills.advance(runner, later) == ("exported", False)
    listing = s3.list_objects_v2(Bucket=bucket, Prefix="all/")["Contents"]
    assert [o["Key"] for o in listing] == [f"all/{k}.jsonl" for k in VIDEO_KEYS]
    statuses = {
        k: json.loads(s3.get_object(Bucket=bucket, Key=f"all/{k}.jsonl")["Body"].read().splitlines()[0])[
            "status"
        ]
        for k in VIDEO_KEYS
    }
    assert set(statuses.values()) == {"succeeded"}
