"""Scrape-time gauges (queue depth, unfinished jobs, backfill progress) and their failure mode."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from services.core.db import create_db_engine, session_factory, upgrade_database
from services.core.metrics import PlatformCollector, exposition
from services.core.models import Backfill, Job, SourceObject, Video
from tests.platform_servers import free_port

QUEUE = "index-metrics-test"


@pytest.fixture()
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    # A database of its own: the gauges count every row, so a shared one would not give exact values.
    engine = create_db_engine(f"sqlite:///{tmp_path / 'metrics.db'}")
    upgrade_database(engine)
    yield session_factory(engine)
    engine.dispose()


def _samples(collector: PlatformCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = exposition(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("tsmindex_") and family.name in {m.name for m in collector.describe()}
    }


def _job(session: Session, status: str, backfill: Backfill | None = None) -> Job:
    video = Video(source_uri=f"s3://bucket/{uuid.uuid4()}.mp4")
    session.add(video)
    session.flush()
    job = Job(video_id=video.id, model_name="tsm", model_version="1", status=status)
    session.add(job)
    session.flush()
    if backfill is not None:
        session.add(
            SourceObject(
                bucket="bucket",
                key=video.source_uri or "",
                etag=uuid.uuid4().hex,
                model_name="tsm",
                model_version="1",
                size_bytes=1,
                job_id=job.id,
                backfill_id=backfill.id,
                outcome="queued",
            )
        )
    return job


def test_gauges_read_redis_and_the_database_at_scrape_time(
    sessions: sessionmaker[Session], redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    client.delete(QUEUE, f"{QUEUE}\x06\x169")
    client.rpush(QUEUE, "a", "b")
    client.rpush(f"{QUEUE}\x06\x169", "c")  # a priority-9 message: Kombu keeps it in a sibling list
    with sessions.begin() as session:
        active = Backfill(source_uri="s3://bucket/p/", status="indexing", objects_listed=5, jobs_created=3)
        done = Backfill(source_uri="s3://bucket/q/", status="completed", objects_listed=9, jobs_created=9)
        session.add_all([active, done])
        session.flush()
        for status in ("succeeded", "failed", "running"):
            _job(session, status, active)
        _job(session, "succeeded", done)
        _job(session, "queued")
    try:
        samples = _samples(PlatformCollector(sessions, redis_url, queues=[QUEUE]))
    finally:
        client.delete(QUEUE, f"{QUEUE}\x06\x169")
        client.close()

    assert samples[("tsmindex_queue_depth", (("queue", QUEUE),))] == 3
    assert samples[("tsmindex_jobs", (("status", "queued"),))] == 1
    assert samples[("tsmindex_jobs", (("status", "running"),))] == 1
    assert samples[("tsmindex_backfills", (("status", "indexing"),))] == 1
    assert samples[("tsmindex_backfills", (("status", "completed"),))] == 1
    assert samples[("tsmindex_backfills", (("status", "listing"),))] == 0
    backfill_jobs = {dict(k[1])["status"]: v for k, v in samples.items() if k[0] == "tsmindex_backfill_jobs"}
    assert backfill_jobs == {"queued": 0, "running": 1, "succeeded": 1, "failed": 1}
    assert samples[("tsmindex_backfill_objects_listed", ())] == 5
    assert samples[("tsmindex_backfill_jobs_created", ())] == 3
    assert samples[("tsmindex_collector_up", (("source", "redis"),))] == 1
    assert samples[("tsmindex_collector_up", (("source", "database"),))] == 1


def test_an_unreachable_broker_is_reported_not_fatal(sessions: sessionmaker[Session]) -> None:
    collector = PlatformCollector(
        sessions, f"redis://127.0.0.1:{free_port()}/0", queues=[QUEUE], timeout_s=0.5
    )
    samples = _samples(collector)
    assert samples[("tsmindex_collector_up", (("source", "redis"),))] == 0
    assert samples[("tsmindex_collector_up", (("source", "database"),))] == 1
    assert not any(name == "tsmindex_queue_depth" for name, _ in samples)
    assert samples[("tsmindex_jobs", (("status", "queued"),))] == 0
