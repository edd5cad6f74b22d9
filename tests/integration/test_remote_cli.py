"""The client and the remote CLI (``tsmindex --api URL``) drive a real platform end to end: the API
under uvicorn, a Celery worker process (in-process inference on a tiny random ResNet-18 TSM),
PostgreSQL, Redis and a moto S3 server. The CLI's own database setting points at nothing, so every
answer it prints came through the API."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from services.client import ApiError, TsmindexClient
from services.core.apikeys import create_api_key
from services.core.config import Mode, Settings
from services.core.db import create_db_engine, session_factory
from services.core.models import Backfill
from services.core.queue import INDEX_QUEUE
from tests import platform_servers
from tests.platform_servers import TINY_CROP, TINY_RESIZE, free_port, moto_client, wait_port
from workers.media.synth import make_video

pytestmark = pytest.mark.integration

pg_database = platform_servers.pg_database
postgres_url = platform_servers.postgres_url
migrated_postgres_url = platform_servers.migrated_postgres_url
redis_url = platform_servers.redis_url
moto_endpoint = platform_servers.moto_endpoint

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TOP_K = 3
PEPPER = "remote-cli-pepper"
WORKER_ARGS = ["-A", "workers.celery_app", "worker", "--pool=prefork", "--concurrency=1"]
WORKER_ARGS += ["-Q", INDEX_QUEUE, "--loglevel=WARNING", "--without-gossip", "--without-mingle"]


@dataclass(frozen=True)
class Platform:
    url: str
    key: str
    bucket: str
    moto: str
    database_url: str


@pytest.fixture(scope="module")
def platform(
    migrated_postgres_url: str, redis_url: str, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    from workers.demo import write_random_checkpoint

    tmp = tmp_path_factory.mktemp("remote")
    checkpoint = tmp / "tsm.pt"
    card = write_random_checkpoint(checkpoint, resize=TINY_RESIZE, crop=TINY_CROP)
    bucket = f"remote-{secrets.token_hex(4)}"
    moto_client(moto_endpoint).create_bucket(Bucket=bucket)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TSMINDEX_")},
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "TSMINDEX_MODE": "platform",
        "TSMINDEX_API_KEYS_PEPPER": PEPPER,
        "TSMINDEX_DATA_DIR": str(tmp / "var"),
        "TSMINDEX_DATABASE_URL": migrated_postgres_url,
        "TSMINDEX_REDIS_URL": redis_url,
        "TSMINDEX_STORAGE_BACKEND": "s3",
        "TSMINDEX_S3_ENDPOINT_URL": moto_endpoint,
        "TSMINDEX_S3_BUCKET": bucket,
        "TSMINDEX_S3_ACCESS_KEY_ID": "test",
        "TSMINDEX_S3_SECRET_ACCESS_KEY": "test",
        "TSMINDEX_S3_ADDRESSING_STYLE": "path",
        "TSMINDEX_CHECKPOINT_PATH": str(checkpoint),
        "TSMINDEX_MODEL_VERSION": card.version,
        "TSMINDEX_INFERENCE_BACKEND": "inprocess",
        "TSMINDEX_CLIP_RESIZE": str(TINY_RESIZE),
        "TSMINDEX_CLIP_CROP": str(TINY_CROP),
        "TSMINDEX_WINDOW_S": "1.0",
        "TSMINDEX_TOP_K": str(TOP_K),
        "TSMINDEX_WORKER_METRICS_PORT": "0",
        "TSMINDEX_BACKFILL_POLL_S": "0.2",
    }
    settings = Settings(
        mode=Mode.platform, api_keys_pepper=SecretStr(PEPPER), database_url=migrated_postgres_url
    )
    engine = create_db_engine(migrated_postgres_url)
    with session_factory(engine).begin() as session:
        _, key = create_api_key(session, settings, name="laptop")
    engine.dispose()
    with (tmp / "api.log").open("wb") as api_log, (tmp / "worker.log").open("wb") as worker_log:
        procs = [
            subprocess.Popen(
                [str(BIN / "tsmindex"), "api", "--port", str(port)],
                cwd=ROOT,
                env=env,
                stdout=api_log,
                stderr=api_log,
            ),
            subprocess.Popen(
                [str(BIN / "celery"), *WORKER_ARGS], cwd=ROOT, env=env, stdout=worker_log, stderr=worker_log
            ),
        ]
    try:
        wait_port(port, proc=procs[0], timeout_s=60)
        yield Platform(f"http://127.0.0.1:{port}", key, bucket, moto_endpoint, migrated_postgres_url)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _cli(platform: Platform, *args: str, via_env: bool = False, key: str | None = None) -> tuple[int, str]:
    """Run ``tsmindex`` as a laptop would: an API URL and key, and no reachable database."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TSMINDEX_")},
        "TSMINDEX_API_KEY": key or platform.key,
        "TSMINDEX_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:9/nothing",
        "COLUMNS": "250",
    }
    api = [] if via_env else ["--api", platform.url]
    if via_env:
        env["TSMINDEX_API_URL"] = platform.url
    done = subprocess.run(
        [str(BIN / "tsmindex"), *api, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    return done.returncode, done.stdout + done.stderr


def test_client_and_remote_cli_upload_wait_search_and_backfill(platform: Platform, tmp_path: Path) -> None:
    videos = [
        make_video(tmp_path / f"clip-{i}.mp4", frames=24 + 12 * i, fps=12.0, size=(96, 72)) for i in range(2)
    ]
    # Upload and wait through the CLI: one job per file, each succeeded, with its top labels.
    code, out = _cli(platform, "index", *map(str, videos))
    assert code == 0, out
    assert out.count("succeeded") == 2 and "clip-0.mp4" in out and "clip-1.mp4" in out, out

    with TsmindexClient(platform.url, platform.key) as client:
        jobs = client.jobs(status="succeeded").items
        assert len(jobs) == 2
        # The same bytes again, through the client: the existing job, flagged a duplicate.
        progress: list[tuple[int, int]] = []
        again = client.upload(videos[0], on_progress=lambda done, total: progress.append((done, total)))
        assert again.duplicate and again.id in {j.id for j in jobs}
        assert progress[-1] == (videos[0].stat().st_size,) * 2
        assert client.wait(again.id).status == "succeeded"
        video = client.video(again.video_id)
        assert len(video.labels) == TOP_K and video.filename == "clip-0.mp4"
        top = video.labels[0]
        hits = client.search(top.label, limit=500).items
        assert (top.score, "clip-0.mp4") in {(h.score, h.filename) for h in hits}
        assert {m.video_id for m in client.moments(top.label, limit=500).items} >= {video.id}
        assert top.label in {item.label for item in client.labels().items}

    # Search from the CLI (the API URL from the environment this time).
    code, out = _cli(platform, "search", top.label, "--limit", "500", via_env=True)
    assert code == 0 and "clip-0.mp4" in out and f"{top.score:.3f}" in out, out
    code, out = _cli(platform, "search", top.label, "--moments", "--limit", "500", via_env=True)
    assert code == 0 and "clip-0.mp4" in out, out
    code, out = _cli(platform, "job", str(again.id))
    assert code == 0 and "succeeded" in out and top.label in out, out
    version = f"{jobs[0].model.name}:{jobs[0].model.version}"
    code, out = _cli(platform, "compare", version, version)
    assert code == 0 and "100.0 %" in out, out

    # A backfill of an S3 prefix: two videos and a document the filters skip.
    s3 = moto_client(platform.moto)
    for i in range(2):
        s3.put_object(
            Bucket=platform.bucket,
            Key=f"lib/{i}.mp4",
            Body=make_video(
                tmp_path / f"s3-{i}.mp4", frames=12 + 6 * i, fps=12.0, size=(64, 48)
            ).read_bytes(),
        )
    s3.put_object(Bucket=platform.bucket, Key="lib/notes.txt", Body=b"not a video")
    uri = f"s3://{platform.bucket}/lib/"
    code, out = _cli(platform, "backfill", uri)
    assert code == 0 and "Backfill completed" in out, out
    engine = create_db_engine(platform.database_url)
    with session_factory(engine)() as session:
        row = session.scalars(select(Backfill).where(Backfill.source_uri == uri)).one()
        counts = (row.status, row.objects_listed, row.objects_skipped, row.jobs_created, row.jobs_succeeded)
    engine.dispose()
    assert counts == ("completed", 3, 1, 2, 2)


def test_a_wrong_key_is_a_clear_error_not_a_traceback(platform: Platform) -> None:
    with TsmindexClient(platform.url, "tsm_wrong") as client, pytest.raises(ApiError) as caught:
        client.labels()
    assert caught.value.status_code == 401
    code, out = _cli(platform, "search", "anything", key="tsm_wrong")
    assert code == 1 and "401" in out and "Traceback" not in out, out
