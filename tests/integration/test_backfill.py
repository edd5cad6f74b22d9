"""A bulk backfill of 1,026 S3 objects through the real pieces: a moto S3 server that enforces IAM
(so one prefix really answers AccessDenied), Postgres, Redis, ``tsmindex backfill`` processes and a
Celery worker process (prefork, 2 children) with in-process inference on a tiny ResNet-18 TSM
(64 px, 8 frames): TorchServe would add minutes of start-up on a shared 2-core machine, and the
served path has its own integration test.

The first backfill process is killed (SIGKILL) while it waits on the queue cap; running the same
command again resumes it and finishes with exact counts and no job done twice. A second backfill of
the prefix then enqueues nothing.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from sqlalchemy import func, select

from services.core import backfills
from services.core.backfills import BackfillCounts
from services.core.db import create_db_engine, session_factory
from services.core.models import Backfill, Job, JobStatus, SourceObject, Video, VideoLabel
from services.core.queue import INDEX_QUEUE
from tests import platform_servers
from tests.platform_servers import TINY_CROP, TINY_RESIZE, free_port, moto_client, wait_port
from workers.demo import random_model_card
from workers.media.synth import make_video

pytestmark = pytest.mark.integration

# The platform's server fixtures (this folder's conftest carries the TorchServe one).
pg_database = platform_servers.pg_database
postgres_url = platform_servers.postgres_url
migrated_postgres_url = platform_servers.migrated_postgres_url
redis_url = platform_servers.redis_url

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BUCKET = "backfill-it"
CLIPS = 1000
CAP = 300  # queued jobs at which listing waits
MAX_UPLOAD = 50_000  # the worker's size limit: the "large" objects exceed it
TOP_K = 3

# Keys sort in this order; the two "gone" objects are listed (and get jobs) before the first
# backfill process is killed, and are deleted before any worker runs.
GONE = [f"lib/00-gone/{i}.mp4" for i in range(2)]
BROKEN = [f"lib/broken/{i}.mp4" for i in range(3)]
CLIP_KEYS = [f"lib/clips/{i:04d}.mp4" for i in range(CLIPS)]
DENIED = [f"lib/denied/{i}.mp4" for i in range(3)]
DOCS = [f"lib/docs/{i}.txt" for i in range(10)]
JUNK = [f"lib/junk/{i}.mp4" for i in range(5)]
LARGE = [f"lib/large/{i}.mp4" for i in range(2)]
WORKER_ARGS = ["-A", "workers.celery_app", "worker", "--pool=prefork", "--concurrency=2"]
WORKER_ARGS += ["-Q", INDEX_QUEUE, "--loglevel=WARNING", "--without-gossip", "--without-mingle"]
FOLDER = "lib/clips/"  # a zero-byte folder marker
LISTED = len(GONE + BROKEN + CLIP_KEYS + DENIED + DOCS + JUNK + LARGE) + 1
SKIPPED = len(DOCS) + 1
QUEUED = LISTED - SKIPPED
FAILED = {"source_missing": 2, "corrupt": 3, "access_denied": 3, "not_a_video": 5, "too_large": 2}


@dataclass(frozen=True)
class IamS3:
    endpoint: str
    access_key: str
    secret_key: str

    def client(self) -> Any:
        return moto_client(self.endpoint, access_key=self.access_key, secret_key=self.secret_key)


@pytest.fixture(scope="module")
def iam_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamS3]:
    """A moto S3 server that checks IAM policies: its user may not read ``lib/denied/``."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto-iam") / "moto.log"
    # The first three calls (creating the user, its policy and its key) run unauthenticated.
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out, env=env
        )
    try:
        wait_port(port, proc=proc)
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )
        iam.create_user(UserName="indexer")
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                {
                    "Effect": "Deny",
                    "Action": "s3:GetObject",
                    "Resource": f"arn:aws:s3:::{BUCKET}/lib/denied/*",
                },
            ],
        }
        iam.put_user_policy(UserName="indexer", PolicyName="read", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="indexer")["AccessKey"]
        yield IamS3(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _free_atom(payload: bytes) -> bytes:
    # A trailing MP4 'free' box: players ignore it, and it gives each copy its own bytes and ETag.
    return struct.pack(">I", 8 + len(payload)) + b"free" + payload


@pytest.fixture(scope="module")
def bucket(iam_s3: IamS3, tmp_path_factory: pytest.TempPathFactory) -> str:
    clip = make_video(
        tmp_path_factory.mktemp("clip") / "clip.mp4", frames=8, fps=8.0, size=(64, 48)
    ).read_bytes()
    bodies: dict[str, bytes] = {key: clip + _free_atom(key.encode()) for key in GONE + CLIP_KEYS + DENIED}
    bodies |= {key: clip[: len(clip) // 3] for key in BROKEN}
    bodies |= {key: b"minutes of the meeting\n" * 40 for key in DOCS + JUNK}
    bodies |= {key: clip + _free_atom(key.encode() + bytes(MAX_UPLOAD)) for key in LARGE}
    bodies[FOLDER] = b""
    s3 = iam_s3.client()
    s3.create_bucket(Bucket=BUCKET)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=BUCKET, Key=kv[0], Body=kv[1]), bodies.items()))
    assert len(bodies) == LISTED
    return BUCKET


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from workers.demo import write_random_checkpoint

    path = tmp_path_factory.mktemp("model") / "tsm.pt"
    card = write_random_checkpoint(path, resize=TINY_RESIZE, crop=TINY_CROP)
    return path, card.version


@pytest.fixture()
def env(
    migrated_postgres_url: str, redis_url: str, iam_s3: IamS3, checkpoint: tuple[Path, str]
) -> dict[str, str]:
    path, version = checkpoint
    assert version == random_model_card().version
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "TSMINDEX_DATABASE_URL": migrated_postgres_url,
        "TSMINDEX_REDIS_URL": redis_url,
        "TSMINDEX_S3_ENDPOINT_URL": iam_s3.endpoint,
        "TSMINDEX_S3_ACCESS_KEY_ID": iam_s3.access_key,
        "TSMINDEX_S3_SECRET_ACCESS_KEY": iam_s3.secret_key,
        "TSMINDEX_S3_ADDRESSING_STYLE": "path",
        "TSMINDEX_CHECKPOINT_PATH": str(path),
        "TSMINDEX_MODEL_VERSION": version,
        "TSMINDEX_INFERENCE_BACKEND": "inprocess",
        "TSMINDEX_CLIP_RESIZE": str(TINY_RESIZE),
        "TSMINDEX_CLIP_CROP": str(TINY_CROP),
        "TSMINDEX_TOP_K": str(TOP_K),
        "TSMINDEX_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "TSMINDEX_WORKER_METRICS_PORT": "0",
        "TSMINDEX_BACKFILL_MAX_QUEUED": str(CAP),
        "TSMINDEX_BACKFILL_PAGE_SIZE": "100",
        "TSMINDEX_BACKFILL_POLL_S": "0.2",
    }


def _backfill_cmd(tmp: Path, env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    with (tmp / f"{name}.log").open("wb") as out:
        return subprocess.Popen(
            [str(BIN / "tsmindex"), "backfill", f"s3://{BUCKET}/lib/"],
            cwd=ROOT,
            env={**env, "COLUMNS": "200"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture()
def start_worker(env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(worker_env: dict[str, str] | None = None) -> None:
        with (tmp_path / "worker.log").open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [str(BIN / "celery"), *WORKER_ARGS],
                    cwd=ROOT,
                    env=worker_env or env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGTERM)  # warm shutdown: finish the running job
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait(predicate: Any, *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


def _seconds(start: datetime | None, end: datetime | None) -> float:
    assert start is not None and end is not None
    return (end - start).total_seconds()


def test_backfill_of_a_thousand_objects_killed_resumed_and_run_again(
    env: dict[str, str], bucket: str, iam_s3: IamS3, start_worker: Any, tmp_path: Path
) -> None:
    engine = create_db_engine(env["TSMINDEX_DATABASE_URL"])
    sessions = session_factory(engine)
    broker = redis.Redis.from_url(env["TSMINDEX_REDIS_URL"])
    uri = f"s3://{bucket}/lib/"

    def backfill_rows() -> list[Backfill]:
        with sessions() as session:
            return list(
                session.scalars(
                    select(Backfill).where(Backfill.source_uri == uri).order_by(Backfill.created_at)
                )
            )

    try:
        # 1. No worker runs yet: the backfill lists until CAP jobs wait, then waits itself. Kill it.
        first = _backfill_cmd(tmp_path, env, "first")
        _wait(
            lambda: bool(backfill_rows()) and backfill_rows()[0].jobs_created == CAP,
            timeout_s=120,
            what="the first backfill never reached the queue cap",
        )
        time.sleep(1.0)  # it now polls the full queue and lists nothing more
        assert first.poll() is None
        first.kill()
        assert first.wait(timeout=10) == -signal.SIGKILL
        [killed] = backfill_rows()
        assert (killed.status, killed.jobs_created, broker.llen(INDEX_QUEUE)) == ("listing", CAP, CAP)
        assert killed.objects_listed == CAP + 1  # the folder marker lib/clips/ was skipped
        capped_s = _seconds(killed.created_at, killed.updated_at)

        # 2. Two objects disappear after they were listed; workers start; the same command resumes.
        s3 = iam_s3.client()
        for key in GONE:
            s3.delete_object(Bucket=bucket, Key=key)
        start_worker()
        resumed_at = time.monotonic()
        resumed = _backfill_cmd(tmp_path, env, "resumed")
        assert resumed.wait(timeout=400) == 0, (tmp_path / "resumed.log").read_text()
        resumed_s = time.monotonic() - resumed_at
        log = (tmp_path / "resumed.log").read_text()
        assert f"resuming after '{killed.cursor_key}'" in log

        [done] = backfill_rows()
        assert done.id == killed.id and done.status == "completed"
        assert backfills.counts_of(done) == BackfillCounts(
            listed=LISTED, skipped=SKIPPED, queued=QUEUED, succeeded=CLIPS, failed=sum(FAILED.values())
        )
        with sessions() as session:
            by_reason, failed = backfills.failures(session, done.id, limit=1000)
            assert by_reason == FAILED
            assert {f.key: f.reason for f in failed if f.reason in ("source_missing", "access_denied")} == {
                **dict.fromkeys(GONE, "source_missing"),
                **dict.fromkeys(DENIED, "access_denied"),
            }
            jobs = session.scalars(select(Job).where(Job.backfill_id == done.id)).all()
            videos = session.scalar(
                select(func.count()).select_from(Video).where(Video.source_uri.like(f"{uri}%"))
            )
            objects = session.scalar(
                select(func.count())
                .select_from(SourceObject)
                .where(SourceObject.bucket == bucket, SourceObject.key.like("lib/%"))
            )
            labels = session.scalar(
                select(func.count())
                .select_from(VideoLabel)
                .join(Job, Job.video_id == VideoLabel.video_id)
                .where(Job.backfill_id == done.id)
            )
        # One job, one video and one source object per queued object; every job ran exactly once.
        assert len(jobs) == videos == objects == QUEUED
        # Attempts count failures: none for a success, one for a permanent failure.
        assert {(j.status, j.attempts) for j in jobs} == {("succeeded", 0), ("failed", 1)}
        assert sorted(j.status for j in jobs).count(JobStatus.succeeded) == CLIPS
        assert labels == CLIPS * TOP_K
        assert broker.llen(INDEX_QUEUE) == 0

        # 3. Run it again: nothing is new, nothing is enqueued (the gone objects are no longer listed).
        again = _backfill_cmd(tmp_path, env, "again")
        assert again.wait(timeout=120) == 0, (tmp_path / "again.log").read_text()
        [_, second] = backfill_rows()
        assert second.status == "completed"
        assert backfills.counts_of(second) == BackfillCounts(LISTED - 2, LISTED - 2, 0, 0, 0)
        assert broker.llen(INDEX_QUEUE) == 0
        with sessions() as session:
            assert (
                session.scalar(select(func.count()).select_from(Job).where(Job.backfill_id == second.id)) == 0
            )

        figures_path = os.environ.get("TSMINDEX_BACKFILL_FIGURES")
        if figures_path:
            started = min(j.started_at for j in jobs if j.started_at is not None)
            finished = max(j.finished_at for j in jobs if j.finished_at is not None)
            rerun_s = _seconds(second.created_at, second.listed_at)
            figures = {
                "objects": LISTED,
                "until_cap_s": capped_s,
                "until_cap_objects_listed_per_s": killed.objects_listed / capped_s,
                "until_cap_jobs_enqueued_per_s": killed.jobs_created / capped_s,
                "rerun_objects_listed_per_s": second.objects_listed / rerun_s,
                "resumed_command_wall_s": resumed_s,
                "jobs_indexed": len(jobs),
                "indexing_wall_s": _seconds(started, finished),
                "jobs_indexed_per_s": len(jobs) / _seconds(started, finished),
            }
            Path(figures_path).write_text(json.dumps(figures, indent=2))
    finally:
        broker.delete(INDEX_QUEUE)
        broker.close()
        engine.dispose()


def test_backfill_started_over_the_api_is_listed_by_a_worker(
    env: dict[str, str], iam_s3: IamS3, bucket: str, start_worker: Any, tmp_path: Path
) -> None:
    """POST /v1/backfills -> the backfill_prefix task in a real worker, rescheduling itself while the
    queue is at its (tiny) cap -> index jobs in the same worker -> GET shows the final counts, and
    the task writes one JSON Lines object per video under the output prefix."""
    from fastapi.testclient import TestClient
    from pydantic import SecretStr

    from services.api.main import create_app
    from services.core.apikeys import create_api_key
    from services.core.config import Mode, Settings

    clip = make_video(tmp_path / "clip.mp4", frames=8, fps=8.0, size=(64, 48)).read_bytes()
    s3 = iam_s3.client()
    keys = [f"api/{i}.mp4" for i in range(6)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=clip + _free_atom(key.encode()))
    s3.put_object(Bucket=bucket, Key="api/zz.mp4", Body=b"not a video at all\n" * 10)
    worker_env = {**env, "TSMINDEX_BACKFILL_MAX_QUEUED": "2"}
    settings = Settings(
        mode=Mode.platform,
        api_keys_pepper=SecretStr("pepper"),
        database_url=env["TSMINDEX_DATABASE_URL"],
        redis_url=env["TSMINDEX_REDIS_URL"],
        model_version=env["TSMINDEX_MODEL_VERSION"],
        backfill_max_queued=2,
    )
    engine = create_db_engine(settings.resolved_database_url)
    with session_factory(engine).begin() as session:
        _, key = create_api_key(session, settings, name="backfill-test")
    engine.dispose()
    start_worker(worker_env)
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as client:
        response = client.post(
            "/v1/backfills",
            json={"source_uri": f"s3://{bucket}/api/", "output_uri": f"s3://{bucket}/api-out/"},
        )
        assert response.status_code == 202, response.text
        location = response.headers["Location"]
        _wait(
            lambda: client.get(location).json()["exported_at"] is not None,
            timeout_s=180,
            what="the API backfill never completed and exported its results",
        )
        body = client.get(location).json()
    assert body["counts"] == {"listed": 7, "skipped": 0, "queued": 7, "succeeded": 6, "failed": 1}
    assert body["failures"] == [
        {"key": "api/zz.mp4", "reason": "not_a_video", "detail": body["failures"][0]["detail"]}
    ]
    exported = s3.list_objects_v2(Bucket=bucket, Prefix="api-out/")["Contents"]
    assert [o["Key"] for o in exported] == [f"api-out/{k}.jsonl" for k in [*keys, "api/zz.mp4"]]
    lines = s3.get_object(Bucket=bucket, Key="api-out/api/0.mp4.jsonl")["Body"].read().decode().splitlines()
    head = json.loads(lines[0])
    assert (head["status"], len(head["labels"]), len(lines)) == ("succeeded", TOP_K, 2)  # one window
