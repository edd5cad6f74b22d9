"""The whole platform as real processes on loopback, for fault scenarios.

Private PostgreSQL, Redis (append-only) and moto S3; a TorchServe serving the shipped motion model;
the API (uvicorn) and a prefork Celery worker (2 children) started from the same environment; a
webhook receiver. The object store and the model server sit behind relays so an outage can be
switched on and off while their state survives. Every process runs in a working directory of its
own (no ``.env`` is read) with only the ``TSMINDEX_*`` variables set here."""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from workers.benchmarks.harness.ports import free_port
from workers.benchmarks.harness.servers import MotoServer, PostgresServer, ProcessGroup, RedisServer, Relay
from workers.benchmarks.harness.webhooks import WebhookReceiver
from workers.torchserve_process import TorchServeProcess

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
MOTION_CHECKPOINT = ROOT / "model_store" / "weights" / "tsm-motion-mnv2-32px.pt"
TERMINAL = ("succeeded", "failed")

# Short leases and a busy reaper: recovery in seconds rather than a minute, so that a test suite
# can afford every scenario. The report (``tsmindex bench faults``) runs with the defaults.
FAST_RECOVERY = {
    "TSMINDEX_JOB_LEASE_S": "6",
    "TSMINDEX_JOB_HEARTBEAT_S": "1.5",
    "TSMINDEX_REAPER_INTERVAL_S": "1",
    "TSMINDEX_JOB_RESEND_AFTER_S": "4",
    "TSMINDEX_JOB_RETRY_BASE_S": "0.5",
    "TSMINDEX_JOB_RETRY_CAP_S": "3",
    "TSMINDEX_BREAKER_PROBE_S": "1",
    "TSMINDEX_BACKFILL_RESUME_AFTER_S": "5",
    "TSMINDEX_WEBHOOK_RETRY_BASE_S": "0.5",
}


def build_motion_archive(out: Path) -> Path:
    """The TorchServe archive of the shipped motion model (MobileNetV2-TSM, 32 px, 4 classes)."""
    from model_store.archive import build_archive
    from model_store.tsm import load_model

    network, card = load_model(MOTION_CHECKPOINT)
    return build_archive(network, card, out, model_name="tsm", precision="fp32")


def archive_env(archive: Path) -> dict[str, str]:
    """The model version and clip shape the workers must use for ``archive``."""
    out = subprocess.run(
        [str(BIN / "tsmindex"), "archive-env", str(archive)], capture_output=True, text=True, check=True
    ).stdout
    words = (shlex.split(line.removeprefix("export "))[0] for line in out.splitlines() if "=" in line)
    return dict(word.split("=", 1) for word in words)


def start_model_server(archive: Path, run_dir: Path) -> TorchServeProcess:
    server = TorchServeProcess(archive, run_dir, batch_size=8, max_batch_delay_ms=20)
    server.start()
    return server


@dataclass(frozen=True)
class JobState:
    status: str
    reason: str | None
    attempts: int
    label_rows: int
    label_ranks: int  # distinct ranks among its video labels: fewer than rows means two label sets


class Platform:
    """Every server of the platform, private to one run. ``model_server`` is started by the caller
    (it takes the longest to start, so one may serve several platforms)."""

    def __init__(self, workdir: Path, model_server: TorchServeProcess, archive: Path, *, fast: bool = True):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.model_server = model_server
        self.postgres = PostgresServer()
        self.redis = RedisServer(workdir / "redis")
        self.moto = MotoServer(workdir / "moto")
        self.webhooks = WebhookReceiver()
        self.api_port = free_port()
        self.bucket = f"faults-{secrets.token_hex(4)}"
        self.env: dict[str, str] = {}
        self._archive = archive
        self._fast = fast
        self.s3_relay: Relay | None = None
        self.model_relay: Relay | None = None
        self.api: ProcessGroup | None = None
        self.worker: ProcessGroup | None = None
        self.api_key = ""
        self._db: Any = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self.postgres.start()
        database_url = self.postgres.create_database("tsmindex")
        self.redis.start()
        self.moto.start()
        self.s3_relay = Relay(self.moto.port)
        self.s3_relay.up()
        inference_port = int(self.model_server.values["TSMINDEX_TORCHSERVE_INFERENCE_URL"].rsplit(":", 1)[1])
        self.model_relay = Relay(inference_port)
        self.model_relay.up()
        self.env = self._environment(database_url)
        self.s3().create_bucket(Bucket=self.bucket)
        self._migrate(database_url)
        self.api_key = self._run_cli("apikey", "create", "faults").strip().splitlines()[-1]
        uvicorn = [str(BIN / "python"), "-m", "uvicorn", "services.api.main:create_app", "--factory"]
        self.api = self._group("api", [*uvicorn, "--host", "127.0.0.1", "--port", str(self.api_port)])
        self.start_api()
        self.start_worker()

    def _environment(self, database_url: str) -> dict[str, str]:
        assert self.s3_relay is not None and self.model_relay is not None
        ts = self.model_server.values
        env = {k: v for k, v in os.environ.items() if not k.startswith("TSMINDEX_")}
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "TSMINDEX_MODE": "platform",
                "TSMINDEX_DATA_DIR": str(self.workdir / "var"),
                "TSMINDEX_API_KEYS_PEPPER": secrets.token_urlsafe(16),
                "TSMINDEX_WEBHOOK_SECRET": secrets.token_urlsafe(16),
                "TSMINDEX_DATABASE_URL": database_url,
                "TSMINDEX_REDIS_URL": self.redis.url,
                "TSMINDEX_STORAGE_BACKEND": "s3",
                "TSMINDEX_S3_ENDPOINT_URL": self.s3_relay.url,
                "TSMINDEX_S3_BUCKET": self.bucket,
                "TSMINDEX_S3_ACCESS_KEY_ID": "test",
                "TSMINDEX_S3_SECRET_ACCESS_KEY": "test",
                "TSMINDEX_INFERENCE_BACKEND": "torchserve",
                "TSMINDEX_TORCHSERVE_INFERENCE_URL": self.model_relay.url,
                "TSMINDEX_TORCHSERVE_MANAGEMENT_URL": ts["TSMINDEX_TORCHSERVE_MANAGEMENT_URL"],
                "TSMINDEX_TORCHSERVE_METRICS_URL": ts["TSMINDEX_TORCHSERVE_METRICS_URL"],
                "TSMINDEX_TORCHSERVE_KEY_FILE": str(self.model_server.run_dir / "key_file.json"),
                "TSMINDEX_INFERENCE_BATCH_SIZE": ts["TSMINDEX_INFERENCE_BATCH_SIZE"],
                "TSMINDEX_TORCHSERVE_MAX_RETRIES": "2",
                "TSMINDEX_TORCHSERVE_BACKOFF_BASE_S": "0.1",
                "TSMINDEX_TORCHSERVE_CONNECT_TIMEOUT_S": "2",
                "TSMINDEX_IO_TIMEOUT_S": "10",
                "TSMINDEX_API_PORT": str(self.api_port),
                "TSMINDEX_WORKER_METRICS_PORT": "0",
                "TSMINDEX_WINDOW_S": "1",
                # The webhook receiver listens on loopback over plain http.
                "TSMINDEX_WEBHOOK_ALLOW_HTTP": "true",
                "TSMINDEX_WEBHOOK_ALLOW_NETWORKS": '["127.0.0.1/32"]',
                # One key drives the whole load: its per-key quotas would measure the quota, not the
                # platform (the API's own upload cap still answers 503 with Retry-After).
                "TSMINDEX_RATE_LIMIT_PER_MINUTE": "0",
                "TSMINDEX_MAX_CONCURRENT_UPLOADS": "0",
                **archive_env(self._archive),
            }
        )
        if self._fast:
            env.update(FAST_RECOVERY)
        return env

    def _group(self, name: str, command: list[str], env: dict[str, str] | None = None) -> ProcessGroup:
        cwd = self.workdir / "cwd"
        cwd.mkdir(exist_ok=True)
        return ProcessGroup(command, log=self.workdir / f"{name}.log", env=env or self.env, cwd=cwd)

    def _run_cli(self, *args: str) -> str:
        cwd = self.workdir / "cwd"
        cwd.mkdir(exist_ok=True)
        result = subprocess.run(
            [str(BIN / "tsmindex"), *args], env=self.env, cwd=cwd, capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(f"tsmindex {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def _migrate(self, database_url: str) -> None:
        from services.core.db import create_db_engine, upgrade_database

        engine = create_db_engine(database_url)
        try:
            upgrade_database(engine)
        finally:
            engine.dispose()

    def start_api(self) -> None:
        assert self.api is not None
        self.api.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not self.api.running():
                raise RuntimeError(f"the API exited; see {self.api.log}")
            try:
                if httpx.get(f"{self.api_url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("the API did not answer /healthz in 120 s")

    def start_worker(self, **overrides: str) -> None:
        """A prefork worker with 2 children; ``overrides`` are extra ``TSMINDEX_*`` settings."""
        env = {**self.env, **overrides}
        name = f"faults-{secrets.token_hex(3)}@%h"
        command = [str(BIN / "celery"), "-A", "workers.celery_app", "worker", "--pool=prefork", "-c", "2"]
        command += ["-Q", "index", "--loglevel=INFO", "-n", name, "--without-gossip", "--without-mingle"]
        self.worker = self._group("worker", command, env=env)
        offset = self.worker.log.stat().st_size if self.worker.log.exists() else 0
        self.worker.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not self.worker.running():
                raise RuntimeError(f"the worker exited; see {self.worker.log}")
            with self.worker.log.open("rb") as log:
                log.seek(offset)
                if b" ready." in log.read():
                    return
            time.sleep(0.2)
        raise TimeoutError("the worker was not ready in 120 s")

    def ensure_running(self) -> None:
        """Everything up again after a scenario that failed half-way."""
        if not self.postgres.running():
            self.postgres.start()
        for relay in (self.s3_relay, self.model_relay):
            if relay is not None:
                relay.up()
        if self.api is not None and not self.api.running():
            self.start_api()
        if self.worker is None or not self.worker.running():
            self.start_worker()

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop(timeout_s=60)

    def kill_worker(self) -> None:
        """SIGKILL the worker's main process and its children at once."""
        if self.worker is not None:
            self.worker.kill()

    def kill_worker_child(self) -> int:
        """SIGKILL one prefork child; returns its pid."""
        assert self.worker is not None
        children = _children(self.worker.pid)
        if not children:
            raise RuntimeError("the worker has no child process")
        os.kill(children[0], signal.SIGKILL)
        return children[0]

    def close(self) -> None:
        for group in (self.worker, self.api):
            if group is not None:
                group.stop(timeout_s=30)
        if self._db is not None:
            self._db.dispose()
        for relay in (self.s3_relay, self.model_relay):
            if relay is not None:
                relay.down()
        self.webhooks.close()
        self.moto.stop()
        self.redis.stop()
        self.postgres.close()

    # -- clients -------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        return httpx.Client(base_url=self.api_url, headers=headers, timeout=60, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        return httpx.AsyncClient(base_url=self.api_url, headers=headers, timeout=120, **kwargs)

    def s3(self) -> Any:
        """A boto3 client of the moto server itself (not through the relay)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.moto.url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def upload(self, path: Path, *, webhook: bool = True, **options: str) -> str:
        """Submit ``path`` through the API (retrying 503s); returns its job id."""
        data = dict(options)
        if webhook:
            data["webhook_url"] = self.webhooks.url
        with self.client() as client:
            for _ in range(60):
                with path.open("rb") as f:
                    response = client.post(
                        "/v1/videos", files={"file": (path.name, f, "video/mp4")}, data=data
                    )
                if response.status_code != 503:
                    break
                time.sleep(float(response.headers.get("Retry-After", "1")))
        if response.status_code not in (200, 202):
            raise RuntimeError(f"upload of {path.name}: HTTP {response.status_code} {response.text}")
        return str(response.json()["id"])

    def send_index_message(self, job_id: str) -> None:
        """One more broker message for ``job_id``, as a duplicate delivery would bring."""
        from celery import Celery

        from services.core.queue import INDEX_QUEUE, INDEX_VIDEO_TASK

        producer = Celery("faults", broker=self.redis.url)
        try:
            producer.send_task(INDEX_VIDEO_TASK, args=[job_id], queue=INDEX_QUEUE)
        finally:
            producer.close()

    # -- the database as the truth -------------------------------------------------------------

    def _engine(self) -> Any:
        if self._db is None:
            from services.core.db import create_db_engine

            self._db = create_db_engine(self.env["TSMINDEX_DATABASE_URL"])
        return self._db

    def jobs(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        from sqlalchemy import func, select

        from services.core.models import Job, VideoLabel

        ids = [uuid.UUID(j) for j in job_ids]
        labels = (
            select(
                VideoLabel.video_id,
                func.count().label("rows"),
                func.count(func.distinct(VideoLabel.rank)).label("ranks"),
            )
            .group_by(VideoLabel.video_id, VideoLabel.model_name, VideoLabel.model_version)
            .subquery()
        )
        query = (
            select(Job.id, Job.status, Job.reason, Job.attempts, labels.c.rows, labels.c.ranks)
            .outerjoin(labels, labels.c.video_id == Job.video_id)
            .where(Job.id.in_(ids))
        )
        try:
            with self._engine().connect() as conn:
                rows = conn.execute(query).all()
        except Exception:
            self._engine().dispose()  # the database restarted: reconnect next time
            raise
        return {str(r[0]): JobState(r[1], r[2], r[3], r[4] or 0, r[5] or 0) for r in rows}

    def backfill_jobs(self, backfill_id: str) -> list[str]:
        from sqlalchemy import select

        from services.core.models import Job

        with self._engine().connect() as conn:
            rows = conn.execute(select(Job.id).where(Job.backfill_id == uuid.UUID(backfill_id))).all()
        return [str(r[0]) for r in rows]

    def wait_jobs(self, job_ids: list[str], *, timeout_s: float, poll_s: float = 0.5) -> dict[str, JobState]:
        """The jobs once all are final, or as they stand at the timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                states = self.jobs(job_ids)
            except Exception:
                states = {}
            if len(states) == len(job_ids) and all(s.status in TERMINAL for s in states.values()):
                return states
            if time.monotonic() > deadline:
                return states
            time.sleep(poll_s)

    def wait_status(self, job_ids: list[str], status: str, *, count: int, timeout_s: float) -> bool:
        """Whether at least ``count`` of the jobs reach ``status`` (e.g. running) in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            states = self.jobs(job_ids)
            if sum(s.status == status for s in states.values()) >= count:
                return True
            time.sleep(0.1)
        return False


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return sorted(int(p) for p in out.split())
