from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from services.api.guard import FORM_OVERHEAD_BYTES
from services.api.main import create_app
from services.core.config import Settings
from services.core.db import create_db_engine, session_factory
from services.core.indexing.reaper import UNSENT_GRACE_S, Scope, reap_once
from services.core.models import Job, LabelSegment, Video, VideoLabel, WindowLabel
from services.core.queue import INDEX_QUEUE, INDEX_VIDEO_TASK, create_producer, enqueue_index_video
from services.core.windows import label_segments
from tests.platform_servers import free_port, moto_client
from workers.media.synth import make_video

MAX_UPLOAD = 300_000


@pytest.fixture()
def settings(platform_settings: Settings) -> Settings:
    return platform_settings.model_copy(
        update={
            "max_upload_bytes": MAX_UPLOAD,
            "inference_backend": "torchserve",
            # Nothing listens here, whatever else runs on this machine's default port.
            "torchserve_inference_url": f"http://127.0.0.1:{free_port()}",
        }
    )


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("videos")
    return [make_video(root / f"v{i}.mp4", frames=12 + 6 * i, size=(96, 64)) for i in range(3)]


def _bucket_keys(settings: Settings) -> list[str]:
    return [o["Key"] for o in _s3(settings).list_objects_v2(Bucket=settings.s3_bucket).get("Contents", [])]


def _queued_job_ids(broker: redis.Redis) -> list[str]:
    ids = []
    raws: list[bytes] = broker.lrange(INDEX_QUEUE, 0, -1)  # type: ignore[assignment]  # sync client
    for raw in raws:
        message = json.loads(raw)
        assert message["headers"]["task"] == INDEX_VIDEO_TASK
        ids.append(message["headers"]["argsrepr"].strip("[]()',"))
    return ids


def _upload(client: TestClient, path: Path, **fields: Any) -> Any:
    with path.open("rb") as f:
        return client.post("/v1/videos", files={"file": (path.name, f, "video/mp4")}, data=fields)


def test_health_is_open_and_everything_else_needs_a_key(settings: Settings, api_key: str) -> None:
    with TestClient(create_app(settings)) as anon:
        assert anon.get("/healthz").json() == {"status": "ok"}
        for method, url in [("GET", "/v1/labels"), ("GET", "/v1/videos?label=x"), ("POST", "/v1/videos")]:
            assert anon.request(method, url).status_code == 401
        assert anon.get("/v1/labels", headers={"Authorization": "Bearer tsm_wrong"}).status_code == 401
        assert anon.get("/v1/labels", headers={"Authorization": f"Bearer {api_key}"}).status_code == 200


def test_upload_creates_one_job_and_enqueues_its_id(
    client: TestClient, settings: Settings, broker: redis.Redis, videos: list[Path]
) -> None:
    response = _upload(client, videos[0], top_k="3", include="a, b", webhook_url="")
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert (job["status"], job["attempts"], job["duplicate"]) == ("queued", 0, False)
    assert job["model"] == {"name": "tsm", "version": settings.model_version}
    assert job["options"] == {"top_k": 3, "include": ["a", "b"]}
    assert _queued_job_ids(broker) == [job["id"]]
    assert len(_bucket_keys(settings)) == 1

    engine = create_db_engine(settings.resolved_database_url)
    with session_factory(engine)() as session:
        video = session.get_one(Video, uuid.UUID(job["video_id"]))
        assert video.size_bytes == videos[0].stat().st_size
        assert video.filename == "v0.mp4"
        assert video.storage_key in _bucket_keys(settings)
    engine.dispose()

    # The same bytes again: the same job, no second object, no second index.
    again = _upload(client, videos[0])
    assert again.status_code == 200
    assert (again.json()["id"], again.json()["duplicate"]) == (job["id"], True)
    assert len(_bucket_keys(settings)) == 1

    status = client.get(f"/v1/jobs/{job['id']}")
    assert status.status_code == 200 and status.json()["status"] == "queued"
    assert client.get(f"/v1/jobs/{uuid.uuid4()}").status_code == 404


def test_idempotency_key_returns_the_first_job_for_the_same_request_only(
    client: TestClient, settings: Settings, videos: list[Path]
) -> None:
    first = _upload_with_key(client, videos[1], "key-1")
    again = _upload_with_key(client, videos[1], "key-1")
    assert first.status_code == 202
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    # The same key with other bytes is another request: refused, and its copy is not kept.
    other = _upload_with_key(client, videos[2], "key-1")
    assert other.status_code == 422
    assert other.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
    assert len(_bucket_keys(settings)) == 1
    assert _upload_with_key(client, videos[2], "key-2").json()["id"] != first.json()["id"]


def _upload_with_key(client: TestClient, path: Path, key: str) -> Any:
    with path.open("rb") as f:
        return client.post(
            "/v1/videos", files={"file": (path.name, f, "video/mp4")}, headers={"Idempotency-Key": key}
        )


def test_upload_errors(client: TestClient, settings: Settings, tmp_path: Path, videos: list[Path]) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a video\n" * 50)
    assert _upload(client, text).status_code == 415
    assert (
        client.post("/v1/videos", content=b"raw", headers={"Content-Type": "text/plain"}).status_code == 415
    )

    big = tmp_path / "big.mp4"
    big.write_bytes(videos[0].read_bytes()[:64] + b"\0" * (MAX_UPLOAD + 10))
    too_big = _upload(client, big)
    assert too_big.status_code == 413
    assert str(MAX_UPLOAD) in too_big.json()["detail"]

    bad = _upload(client, videos[0], top_k="0")
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"][-1] == "top_k"
    assert _upload(client, videos[0], webhook_url="https://example.org/hook").status_code == 422  # no secret
    missing = client.post("/v1/videos", data={"top_k": "3"}, files={"other": ("x", b"x")})
    assert missing.status_code == 422
    assert _bucket_keys(settings) == []


def test_a_chunked_upload_is_cut_off_at_the_limit(
    client: TestClient, settings: Settings, api_key: str, videos: list[Path]
) -> None:
    """Without a Content-Length the size is only known while reading: the API stops reading once the
    body passes the limit, instead of spooling all of it to disk first."""
    boundary = "tsmindex-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="huge.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode() + videos[0].read_bytes()[:64]
    chunk, chunks = b"\0" * 65536, 2000  # 131 MB, if it were all read
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        if pulled == 1:
            return {"type": "http.request", "body": head, "more_body": True}
        return {"type": "http.request", "body": chunk, "more_body": pulled <= chunks}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/videos",
        "raw_path": b"/v1/videos",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {api_key}".encode()),
            (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
            (b"transfer-encoding", b"chunked"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    asyncio.run(client.app(scope, receive, send))  # type: ignore[arg-type]
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert str(MAX_UPLOAD) in json.loads(body)["detail"]
    read = len(head) + (pulled - 1) * len(chunk)
    assert read <= MAX_UPLOAD + FORM_OVERHEAD_BYTES + len(chunk)  # stopped at the limit, not at 131 MB
    assert _bucket_keys(settings) == []


def test_no_database_connection_is_held_while_an_upload_streams(
    settings: Settings, api_key: str, tmp_path: Path
) -> None:
    """A slow client used to hold a pooled connection (the key lookup's transaction) for as long as
    its body streamed, so 10 slow uploads exhausted the pool and everything else answered 500."""
    data = make_video(tmp_path / "slow.mp4", frames=27, size=(96, 64)).read_bytes()
    boundary = "tsmindex-slow-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="slow.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    parts = [
        head,
        *(data[i : i + 4096] for i in range(0, len(data), 4096)),
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    one = settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0})
    checked_out: list[int] = []
    sent: list[dict[str, Any]] = []
    with TestClient(create_app(one)) as client:
        pool = client.app.state.sessions.kw["bind"].pool  # type: ignore[attr-defined]

        async def receive() -> dict[str, Any]:
            checked_out.append(pool.checkedout())  # while the body streams
            await asyncio.sleep(0)
            part = parts.pop(0)
            return {"type": "http.request", "body": part, "more_body": bool(parts)}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/videos",
            "raw_path": b"/v1/videos",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"testserver"),
                (b"authorization", f"Bearer {api_key}".encode()),
                (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
            "state": {},
        }
        asyncio.run(client.app(scope, receive, send))  # type: ignore[arg-type]
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 202
    assert len(checked_out) > 3 and set(checked_out) == {0}


def _s3(settings: Settings) -> Any:
    return moto_client(settings.s3_endpoint_url or "")


def test_s3_source(client: TestClient, settings: Settings, broker: redis.Redis, videos: list[Path]) -> None:
    uri = f"s3://{settings.s3_bucket}/cats/1.mp4"
    s3 = _s3(settings)
    s3.put_object(Bucket=settings.s3_bucket, Key="cats/1.mp4", Body=videos[0].read_bytes())
    response = client.post("/v1/videos", json={"source_uri": uri, "top_k": 2})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["options"] == {"top_k": 2}
    assert client.post("/v1/videos", json={"source_uri": uri}).json()["duplicate"] is True
    assert _queued_job_ids(broker) == [job["id"]] * 2  # never started: sent again
    assert client.post("/v1/videos", json={"source_uri": "http://x/y.mp4"}).status_code == 422
    missing = client.post("/v1/videos", json={"source_uri": f"s3://{settings.s3_bucket}/cats/none.mp4"})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "source_uri"]
    assert "does not exist" in missing.json()["detail"][0]["msg"]

    # A worker indexed the object as it is now: submitting it again changes nothing ...
    etag = s3.head_object(Bucket=settings.s3_bucket, Key="cats/1.mp4")["ETag"].strip('"')
    engine = create_db_engine(settings.resolved_database_url)
    with session_factory(engine).begin() as session:
        row = session.get_one(Job, uuid.UUID(job["id"]))
        row.status, row.attempts = "succeeded", 1
        session.get_one(Video, row.video_id).source_etag = etag
    broker.delete(INDEX_QUEUE)
    again = client.post("/v1/videos", json={"source_uri": uri})
    assert (again.status_code, again.json()["status"], _queued_job_ids(broker)) == (200, "succeeded", [])
    # ... until the object is replaced: then the same job indexes the new version.
    s3.put_object(Bucket=settings.s3_bucket, Key="cats/1.mp4", Body=videos[1].read_bytes())
    changed = client.post("/v1/videos", json={"source_uri": uri, "top_k": 3})
    assert changed.status_code == 200
    assert (changed.json()["id"], changed.json()["status"], changed.json()["options"]) == (
        job["id"],
        "queued",
        {"top_k": 3},
    )
    assert _queued_job_ids(broker) == [job["id"]]
    engine.dispose()


def _index(
    settings: Settings, labels: dict[str, float], windows: Sequence[dict[str, float]] = ()
) -> uuid.UUID:
    """A video indexed with the given label scores, and windows of 10 s with their own, written as the
    pipeline writes them."""
    engine = create_db_engine(settings.resolved_database_url)
    with session_factory(engine).begin() as session:
        video = Video(sha256=uuid.uuid4().hex * 2, filename="x.mp4", duration_s=2.0)
        session.add(video)
        session.flush()
        session.add(
            Job(video_id=video.id, model_name="tsm", model_version=settings.model_version, status="succeeded")
        )
        for rank, (label, score) in enumerate(sorted(labels.items(), key=lambda kv: -kv[1]), start=1):
            session.add(
                VideoLabel(
                    video_id=video.id,
                    model_name="tsm",
                    model_version=settings.model_version,
                    label=label,
                    label_index=rank,
                    score=score,
                    peak_score=score,
                    rank=rank,
                )
            )
        key = {"video_id": video.id, "model_name": "tsm", "model_version": settings.model_version}
        window_rows = [
            {
                "window_index": index,
                "start_ms": index * 10_000,
                "end_ms": (index + 1) * 10_000,
                "label": label,
                "label_index": rank,
                "score": score,
                "rank": rank,
            }
            for index, scores in enumerate(windows)
            for rank, (label, score) in enumerate(sorted(scores.items(), key=lambda kv: -kv[1]), start=1)
        ]
        session.add_all(WindowLabel(**key, **row) for row in window_rows)
        session.add_all(LabelSegment(**key, **segment) for segment in label_segments(window_rows))
        video_id = video.id
    engine.dispose()
    return video_id


def test_search_pages_by_score_and_labels_count_videos(client: TestClient, settings: Settings) -> None:
    label = f"juggling-{uuid.uuid4().hex[:6]}"
    scores = [0.9, 0.7, 0.7, 0.4, 0.1]
    ids = [_index(settings, {label: s, "other": 0.05}) for s in scores]
    seen: list[tuple[str, float]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {
            "label": label,
            "min_score": 0.2,
            "limit": 2,
            "model_version": settings.model_version,
        }
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/videos", params=params).json()
        seen += [(item["video_id"], item["score"]) for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 2
    assert [s for _, s in seen] == [0.9, 0.7, 0.7, 0.4]
    assert {v for v, _ in seen} == {str(i) for i in ids[:4]}
    assert client.get("/v1/videos", params={"label": label, "cursor": "%%%"}).status_code == 422

    counts = {item["label"]: item["videos"] for item in client.get("/v1/labels").json()["items"]}
    assert counts[label] == 5

    detail = client.get(f"/v1/videos/{ids[0]}").json()
    assert [(x["label"], x["score"], x["rank"]) for x in detail["labels"]] == [
        (label, 0.9, 1),
        ("other", 0.05, 2),
    ]
    assert detail["model"] == {"name": "tsm", "version": settings.model_version}


def test_moments_are_runs_of_windows_best_first(client: TestClient, settings: Settings) -> None:
    label = f"surfing-{uuid.uuid4().hex[:6]}"
    first = _index(
        settings,
        {label: 0.5},
        [{label: 0.2}, {label: 0.9, "x": 0.1}, {label: 0.4}, {"x": 0.7}, {label: 0.35}],
    )
    second = _index(settings, {label: 0.3}, [{"x": 0.8}, {label: 0.6}])
    _index(settings, {label: 0.2}, [{label: 0.25}])  # below min_score everywhere
    seen: list[tuple[str, int, int, int, float, float]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"label": label, "min_score": 0.3, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/moments", params=params).json()
        seen += [
            (hit["video_id"], hit["start_ms"], hit["end_ms"], hit["windows"], hit["score"], hit["mean_score"])
            for hit in page["items"]
        ]
        assert all(hit["label"] == label for hit in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # The first video's three windows in a row are one moment, ranked by its best window.
    assert seen == [
        (str(first), 0, 30_000, 3, 0.9, pytest.approx(0.5)),
        (str(second), 10_000, 20_000, 1, 0.6, 0.6),
        (str(first), 40_000, 50_000, 1, 0.35, 0.35),
    ]
    assert client.get("/v1/moments", params={"label": label, "cursor": "%%%"}).status_code == 422
    assert client.get("/v1/moments", params={"label": label, "min_score": 2}).status_code == 422
    other_model = {"label": label, "model_version": "never-deployed"}
    assert client.get("/v1/moments", params=other_model).json()["items"] == []
    anonymous = client.get("/v1/moments", params={"label": label}, headers={"Authorization": ""})
    assert anonymous.status_code == 401

    detail = client.get(f"/v1/videos/{first}").json()
    assert [(g["label"], g["start_ms"], g["end_ms"]) for g in detail["segments"]] == [
        (label, 0, 30_000),
        ("x", 10_000, 20_000),
        ("x", 30_000, 40_000),
        (label, 40_000, 50_000),
    ]
    assert len(detail["windows"]) == 5


def test_jobs_list_newest_first_by_status_and_reason(client: TestClient, settings: Settings) -> None:
    # Created "in the future", so these are the run's newest jobs whatever other tests add.
    version = f"listing-{uuid.uuid4().hex[:8]}"
    start = datetime(2100, 1, 1, tzinfo=UTC)
    spec = [
        ("failed", "corrupt"),
        ("succeeded", None),
        ("failed", "too_large"),
        ("failed", "corrupt"),
        ("failed", "corrupt"),  # created at the same time as the one before: the id breaks the tie
        ("queued", None),
    ]
    engine = create_db_engine(settings.resolved_database_url)
    jobs: list[tuple[datetime, str, str, str | None]] = []
    with session_factory(engine).begin() as session:
        for i, (status, reason) in enumerate(spec):
            video = Video(sha256=uuid.uuid4().hex * 2)
            session.add(video)
            session.flush()
            created = start + timedelta(minutes=min(i, 3))
            job = Job(video_id=video.id, model_name="tsm", model_version=version, created_at=created)
            job.status, job.reason = status, reason
            session.add(job)
            session.flush()
            jobs.append((created, str(job.id), status, reason))
    engine.dispose()
    newest_first = sorted(jobs, reverse=True)

    def listing(**params: Any) -> list[str]:
        """Page through, 2 jobs a page, until past this test's jobs (the newest)."""
        seen: list[str] = []
        cursor = None
        while True:
            page = client.get(
                "/v1/jobs", params={**params, "limit": 2, **({"cursor": cursor} if cursor else {})}
            )
            assert page.status_code == 200, page.text
            items = page.json()["items"]
            seen += [j["id"] for j in items if j["model"]["version"] == version]
            cursor = page.json()["next_cursor"]
            if cursor is None or any(j["model"]["version"] != version for j in items):
                return seen

    assert listing() == [job_id for _, job_id, _, _ in newest_first]
    failed = [job_id for _, job_id, status, _ in newest_first if status == "failed"]
    assert listing(status="failed") == failed
    corrupt = [job_id for _, job_id, _, reason in newest_first if reason == "corrupt"]
    assert listing(status="failed", reason="corrupt") == corrupt and len(corrupt) == 3
    assert client.get("/v1/jobs", params={"status": "lost"}).status_code == 422
    assert client.get("/v1/jobs", params={"cursor": "%%%"}).status_code == 422


def test_delete_removes_rows_and_bytes(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    # Bytes no other test uploads: the database is shared by the run, buckets are per test.
    job = _upload(client, make_video(tmp_path / "own.mp4", frames=40, size=(96, 64))).json()
    assert len(_bucket_keys(settings)) == 1
    assert client.delete(f"/v1/videos/{job['video_id']}").status_code == 204
    assert _bucket_keys(settings) == []
    assert client.get(f"/v1/videos/{job['video_id']}").status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert client.delete(f"/v1/videos/{job['video_id']}").status_code == 404


def test_readyz_reports_each_dependency(client: TestClient) -> None:
    response = client.get("/readyz")
    body = response.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] == "ok"
    # No TorchServe runs in this test: not ready, and says why.
    assert response.status_code == 503
    assert body["checks"]["torchserve"] != "ok"


def test_broker_down_accepts_the_job_and_the_reaper_sends_it(
    settings: Settings, api_key: str, broker: redis.Redis, tmp_path: Path
) -> None:
    video = make_video(tmp_path / "while-down.mp4", frames=30, size=(96, 64))
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(down), headers={"Authorization": f"Bearer {api_key}"}) as client:
        accepted = _upload(client, video)
    # The job row is the truth: it is recorded and queued, its wake-up message still unsent.
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    engine = create_db_engine(settings.resolved_database_url)
    sessions = session_factory(engine)
    with sessions() as session:
        job = session.get_one(Job, uuid.UUID(job_id))
        assert (job.status, job.sent_at) == ("queued", None)
        created = job.created_at
    # A reaper pass past the submitter's grace sends it (this test's job only).
    producer = create_producer(settings)
    report = reap_once(
        sessions,
        settings,
        send_job=lambda job: enqueue_index_video(producer, job),
        send_backfill=lambda _: None,
        scope=Scope(job_ids=[uuid.UUID(job_id)]),
        now=created + timedelta(seconds=UNSENT_GRACE_S + 1),
    )
    assert report is not None and report.resent == 1
    assert _queued_job_ids(broker) == [job_id]
    with sessions() as session:
        assert session.get_one(Job, uuid.UUID(job_id)).sent_at is not None
    producer.close()
    engine.dispose()


def test_too_many_uploads_at_once_answer_503_with_retry_after(
    settings: Settings, api_key: str, tmp_path: Path
) -> None:
    video = make_video(tmp_path / "busy.mp4", frames=20, size=(96, 64))
    full = settings.model_copy(update={"api_max_concurrent_uploads": 1})
    with TestClient(create_app(full), headers={"Authorization": f"Bearer {api_key}"}) as client:
        slots = client.app.state.upload_slots  # type: ignore[attr-defined]
        slots.in_use = 1  # one upload streaming
        refused = _upload(client, video)
        slots.in_use = 0
        accepted = _upload(client, video)
    assert (refused.status_code, refused.headers["retry-after"]) == (503, "5")
    assert accepted.status_code == 202


def test_an_exhausted_database_pool_answers_503_not_500(
    settings: Settings, api_key: str, videos: list[Path]
) -> None:
    tight = settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout_s": 0.2})
    with TestClient(create_app(tight), headers={"Authorization": f"Bearer {api_key}"}) as client:
        engine = client.app.state.sessions.kw["bind"]  # type: ignore[attr-defined]
        held = engine.connect()  # every connection of the pool in use
        try:
            busy = client.get(f"/v1/jobs/{uuid.uuid4()}")
        finally:
            held.close()
        free = client.get(f"/v1/jobs/{uuid.uuid4()}")
    assert (busy.status_code, busy.headers["retry-after"]) == (503, "10")
    assert busy.json()["reason"] == "database_unavailable"
    assert free.status_code == 404
