"""The client and the remote CLI (``tsmindex --api URL``) drive a real platform end to end: the API
under uvicorn, a Celery worker process (in-process inference on a tiny random ResNet-18 TSM),
PostgreSQL, Redis and a moto S3 server. The CLI's own database setting points at nothing, so every
answer it prints came through the API.

The worker serves a model version that is not the settings' default, and only the worker knows it
(``tsmindex worker`` registers it): the API and a ``tsmindex backfill`` run from a plain shell, with
only the documented connection settings, must still index every object under that version."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.engine import Engine

from services.client import ApiError, TsmindexClient
from services.core.apikeys import create_api_key
from services.core.config import Mode, Settings
from services.core.db import create_db_engine, session_factory
from services.core.models import Backfill, Job, ServedModel
from tests import platform_servers
from tests.platform_servers import TINY_CROP, TINY_RESIZE, free_port, moto_client, wait_port
from workers.media.synth import make_video

pytestmark = pytest.mark.integration

# The served-model registry is global to a database: this module has one of its own.
private_postgres_url = platform_servers.private_postgres_url
redis_url = platform_servers.redis_url
moto_endpoint = platform_servers.moto_endpoint

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TOP_K = 3
PEPPER = "remote-cli-pepper"


@dataclass(frozen=True)
class Platform:
    url: str
    key: str
    bucket: str
    moto: str
    engine: Engine
    served: str  # NAME:VERSION the worker serves
    shell_env: dict[str, str]  # a plain shell on the platform's host: connection settings only


def _served(engine: Engine) -> list[str]:
    with session_factory(engine)() as session:
        return [f"{r.name}:{r.version}" for r in session.scalars(select(ServedModel))]


def _start(name: str, args: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    with (logs / f"{name}.log").open("wb") as log:
        return subprocess.Popen([str(BIN / "tsmindex"), *args], cwd=ROOT, env=env, stdout=log, stderr=log)


@pytest.fixture(scope="module")
def platform(
    private_postgres_url: str, redis_url: str, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    from workers.demo import write_random_checkpoint

    tmp = tmp_path_factory.mktemp("remote")
    checkpoint = tmp / "tsm.pt"
    card = write_random_checkpoint(checkpoint, resize=TINY_RESIZE, crop=TINY_CROP)
    assert card.version != Settings(_env_file=None).model_version  # type: ignore[call-arg]
    bucket = f"remote-{secrets.token_hex(4)}"
    moto_client(moto_endpoint).create_bucket(Bucket=bucket)
    port = free_port()
    shell_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TSMINDEX_")},
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "250",
        "TSMINDEX_MODE": "platform",
        "TSMINDEX_API_KEYS_PEPPER": PEPPER,
        "TSMINDEX_DATA_DIR": str(tmp / "var"),
        "TSMINDEX_DATABASE_URL": private_postgres_url,
        "TSMINDEX_REDIS_URL": redis_url,
        "TSMINDEX_STORAGE_BACKEND": "s3",
        "TSMINDEX_S3_ENDPOINT_URL": moto_endpoint,
        "TSMINDEX_S3_BUCKET": bucket,
        "TSMINDEX_S3_ACCESS_KEY_ID": "test",
        "TSMINDEX_S3_SECRET_ACCESS_KEY": "test",
        "TSMINDEX_S3_ADDRESSING_STYLE": "path",
        "TSMINDEX_WINDOW_S": "1.0",
        "TSMINDEX_TOP_K": str(TOP_K),
        "TSMINDEX_BACKFILL_POLL_S": "0.2",
        "TSMINDEX_INFERENCE_BACKEND": "torchserve",  # the platform's: the API embeds query clips there
    }
    # Only the worker knows its model; it registers how to cut clips for it too.
    worker_env = {
        **shell_env,
        "TSMINDEX_CHECKPOINT_PATH": str(checkpoint),
        "TSMINDEX_INFERENCE_BACKEND": "inprocess",
        "TSMINDEX_WORKER_METRICS_PORT": "0",
    }
    settings = Settings(
        mode=Mode.platform, api_keys_pepper=SecretStr(PEPPER), database_url=private_postgres_url
    )
    engine = create_db_engine(private_postgres_url)
    with session_factory(engine).begin() as session:
        _, key = create_api_key(session, settings, name="laptop")
    procs = [
        _start("api", ["api", "--port", str(port)], shell_env, tmp),
        _start("worker", ["worker", "-c", "1", "--loglevel", "WARNING"], worker_env, tmp),
    ]
    try:
        wait_port(port, proc=procs[0], timeout_s=60)
        deadline = time.monotonic() + 60
        while not _served(engine):
            assert time.monotonic() < deadline and procs[1].poll() is None, (tmp / "worker.log").read_text()
            time.sleep(0.2)
        served = f"tsm:{card.version}"
        yield Platform(f"http://127.0.0.1:{port}", key, bucket, moto_endpoint, engine, served, shell_env)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        engine.dispose()


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


def _put_videos(platform: Platform, prefix: str, tmp: Path, count: int) -> str:
    """``count`` small videos and a document (which the filters skip) under ``prefix``."""
    s3 = moto_client(platform.moto)
    for i in range(count):
        video = make_video(tmp / f"{prefix.strip('/')}-{i}.mp4", frames=12 + 6 * i, fps=12.0, size=(64, 48))
        s3.put_object(Bucket=platform.bucket, Key=f"{prefix}{i}.mp4", Body=video.read_bytes())
    s3.put_object(Bucket=platform.bucket, Key=f"{prefix}notes.txt", Body=b"not a video")
    return f"s3://{platform.bucket}/{prefix}"


def _backfill(platform: Platform, uri: str) -> tuple[tuple[object, ...], set[str]]:
    """A backfill's (status, listed, skipped, queued, succeeded) and its jobs' model versions."""
    with session_factory(platform.engine)() as session:
        row = session.scalars(select(Backfill).where(Backfill.source_uri == uri)).one()
        versions = {
            f"{j.model_name}:{j.model_version}"
            for j in session.scalars(select(Job).where(Job.backfill_id == row.id))
        }
        return (
            row.status,
            row.objects_listed,
            row.objects_skipped,
            row.jobs_created,
            row.jobs_succeeded,
        ), versions


def test_client_and_remote_cli_upload_wait_search_and_backfill(platform: Platform, tmp_path: Path) -> None:
    videos = [
        make_video(tmp_path / f"clip-{i}.mp4", frames=24 + 12 * i, fps=12.0, size=(96, 72)) for i in range(2)
    ]
    # Upload and wait through the CLI: one job per file, each succeeded under the served version.
    code, out = _cli(platform, "index", *map(str, videos))
    assert code == 0, out
    assert out.count("succeeded") == 2 and "clip-0.mp4" in out and "clip-1.mp4" in out, out
    assert out.count(platform.served) == 2, out

    with TsmindexClient(platform.url, platform.key) as client:
        jobs = client.jobs(status="succeeded").items
        assert len(jobs) == 2
        assert {f"{j.model.name}:{j.model.version}" for j in jobs} == {platform.served}
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
        # Similar windows: the other uploaded clip's windows are found by the first one's embedding.
        similar = client.similar_to_window(video.id, 0, limit=50).items
        assert {h.filename for h in similar} >= {"clip-1.mp4"}
        assert {f"{h.model.name}:{h.model.version}" for h in similar} == {platform.served}
        # A version nobody serves is refused at submission, naming the one that is.
        with pytest.raises(ApiError) as refused:
            client.upload(videos[1], model="tsm:1")
        assert refused.value.status_code == 422
        assert f"model 'tsm:1' is not served; served: {platform.served}" in str(refused.value)

    # Search from the CLI (the API URL from the environment this time).
    code, out = _cli(platform, "search", top.label, "--limit", "500", via_env=True)
    assert code == 0 and "clip-0.mp4" in out and f"{top.score:.3f}" in out, out
    code, out = _cli(platform, "search", top.label, "--moments", "--limit", "500", via_env=True)
    assert code == 0 and "clip-0.mp4" in out, out
    code, out = _cli(platform, "job", str(again.id))
    assert code == 0 and "succeeded" in out and top.label in out, out
    code, out = _cli(platform, "compare", platform.served, platform.served)
    assert code == 0 and "100.0 %" in out, out

    # A backfill through the API: two videos and a document the filters skip.
    uri = _put_videos(platform, "lib/", tmp_path, 2)
    code, out = _cli(platform, "backfill", uri)
    assert code == 0 and "Backfill completed" in out, out
    assert _backfill(platform, uri) == (("completed", 3, 1, 2, 2), {platform.served})

    # A reindex through the API (a worker lists it): the uploaded clips are already indexed under
    # the served version, so it lists them and skips them.
    code, out = _cli(platform, "reindex", "--model", platform.served, "--where", "prefix=clip-")
    assert code == 0 and "Backfill completed" in out, out
    assert _backfill(platform, "index:prefix=clip-") == (("completed", 2, 2, 0, 0), set())


def test_a_backfill_from_a_plain_shell_indexes_under_the_served_version(
    platform: Platform, tmp_path: Path
) -> None:
    uri = _put_videos(platform, "shell/", tmp_path, 3)
    done = subprocess.run(
        [str(BIN / "tsmindex"), "backfill", uri],
        cwd=ROOT,
        env=platform.shell_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"with {platform.served}" in done.stdout
    assert _backfill(platform, uri) == (("completed", 4, 1, 3, 3), {platform.served})


def test_a_wrong_key_is_a_clear_error_not_a_traceback(platform: Platform) -> None:
    with TsmindexClient(platform.url, "tsm_wrong") as client, pytest.raises(ApiError) as caught:
        client.labels()
    assert caught.value.status_code == 401
    code, out = _cli(platform, "search", "anything", key="tsm_wrong")
    assert code == 1 and "401" in out and "Traceback" not in out, out
