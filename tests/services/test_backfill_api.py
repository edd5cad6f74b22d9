"""/v1/backfills against Postgres, Redis and a moto S3 server (the listing task run in-process)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import update

from services.api.main import create_app
from services.core.backfills import build_runner
from services.core.config import Settings
from services.core.db import create_db_engine, session_factory
from services.core.indexing.reaper import Scope, reap_once
from services.core.models import Job, JobStatus
from services.core.queue import BACKFILL_PREFIX_TASK, INDEX_QUEUE, create_producer
from tests.platform_servers import free_port, moto_client


@pytest.fixture()
def settings(platform_settings: Settings) -> Settings:
    return platform_settings


@pytest.fixture()
def prefix(settings: Settings) -> str:
    s3 = moto_client(settings.s3_endpoint_url or "")
    for key in ["in/a.mp4", "in/b.MOV", "in/c.mkv", "in/notes.txt"]:
        s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=key.encode())
    return f"s3://{settings.s3_bucket}/in/"


def _messages(broker: redis.Redis) -> list[tuple[str, list[Any]]]:
    out = []
    for raw in reversed(cast(list[bytes], broker.lrange(INDEX_QUEUE, 0, -1))):
        headers = json.loads(raw)["headers"]
        out.append((headers["task"], json.loads(headers["argsrepr"].replace("'", '"'))))
    return out


def test_backfill_lifecycle(client: TestClient, settings: Settings, broker: redis.Redis, prefix: str) -> None:
    response = client.post(
        "/v1/backfills", json={"source_uri": prefix, "extensions": ["mp4", ".mov"], "top_k": 2}
    )
    assert response.status_code == 202, response.text
    body = response.json()
    backfill_id = body["id"]
    assert response.headers["Location"] == f"/v1/backfills/{backfill_id}"
    assert (body["status"], body["source_uri"], body["options"]) == ("listing", prefix, {"top_k": 2})
    assert body["filters"]["extensions"] == ["mp4", "mov"]
    assert body["model"] == {"name": settings.model_name, "version": settings.model_version}
    assert body["counts"] == {"listed": 0, "skipped": 0, "queued": 0, "succeeded": 0, "failed": 0}
    assert _messages(broker) == [(BACKFILL_PREFIX_TASK, [backfill_id])]
    broker.delete(INDEX_QUEUE)

    # What the backfill_prefix task does in a worker.
    engine = create_db_engine(settings.resolved_database_url)
    sessions = session_factory(engine)
    runner = build_runner(settings, sessions, producer=create_producer(settings))
    assert runner.run(uuid.UUID(backfill_id), block=False) == "listed"
    assert len(_messages(broker)) == 2

    body = client.get(f"/v1/backfills/{backfill_id}").json()
    assert body["status"] == "indexing"
    assert body["counts"] == {"listed": 4, "skipped": 2, "queued": 2, "succeeded": 0, "failed": 0}
    assert body["cursor_key"] == "in/notes.txt"

    with sessions.begin() as session:
        session.execute(
            update(Job)
            .where(Job.backfill_id == uuid.UUID(backfill_id))
            .values(status=JobStatus.failed, reason="not_a_video", detail="not a media file")
        )
    engine.dispose()
    body = client.get(f"/v1/backfills/{backfill_id}").json()
    assert body["status"] == "completed" and body["finished_at"] is not None
    assert body["counts"] == {"listed": 4, "skipped": 2, "queued": 2, "succeeded": 0, "failed": 2}
    assert body["failures_by_reason"] == {"not_a_video": 2}
    assert body["failures"] == [
        {"key": "in/a.mp4", "reason": "not_a_video", "detail": "not a media file"},
        {"key": "in/b.MOV", "reason": "not_a_video", "detail": "not a media file"},
    ]
    # Cancelling a finished backfill changes nothing.
    assert client.post(f"/v1/backfills/{backfill_id}/cancel").json()["status"] == "completed"


def test_cancel_and_errors(client: TestClient, broker: redis.Redis, prefix: str) -> None:
    backfill_id = client.post("/v1/backfills", json={"source_uri": prefix}).json()["id"]
    body = client.post(f"/v1/backfills/{backfill_id}/cancel").json()
    assert body["status"] == "cancelled" and body["finished_at"] is not None
    assert client.get(f"/v1/backfills/{uuid.uuid4()}").status_code == 404
    assert client.post(f"/v1/backfills/{uuid.uuid4()}/cancel").status_code == 404
    assert client.post("/v1/backfills", json={"source_uri": "https://x/y"}).status_code == 422
    assert client.post("/v1/backfills", json={"source_uri": prefix, "min_size": -1}).status_code == 422
    anonymous = client.get(f"/v1/backfills/{backfill_id}", headers={"Authorization": ""})
    assert anonymous.status_code == 401


def test_a_backfill_submitted_while_the_broker_is_down_is_accepted_and_resumed_by_the_reaper(
    settings: Settings, api_key: str, broker: redis.Redis, prefix: str
) -> None:
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(down), headers={"Authorization": f"Bearer {api_key}"}) as client:
        accepted = client.post("/v1/backfills", json={"source_uri": prefix})
    assert accepted.status_code == 202, accepted.text
    backfill_id = uuid.UUID(accepted.json()["id"])
    sent: list[str] = []
    engine = create_db_engine(settings.resolved_database_url)
    report = reap_once(
        session_factory(engine),
        settings,
        send_job=lambda _: None,
        send_backfill=sent.append,
        scope=Scope(job_ids=[], backfill_ids=[backfill_id]),
        now=datetime.now(UTC) + timedelta(seconds=settings.backfill_resume_after_s + 1),
    )
    engine.dispose()
    assert report is not None and report.backfills_resumed == 1
    assert sent == [str(backfill_id)]
