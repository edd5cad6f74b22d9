"""Metrics end to end: a real Prometheus scrapes the API, a prefork Celery worker and TorchServe while
they index videos; every expression of the dashboard then returns data through Prometheus's HTTP API,
and the counters agree exactly with what the database says happened."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from pydantic import SecretStr
from sqlalchemy import distinct, func, select, tuple_

from services.core.apikeys import create_api_key
from services.core.config import Settings
from services.core.db import create_db_engine, session_factory
from services.core.models import Job, WindowLabel
from tests import platform_servers
from tests.infra.test_dashboards import RULES, dashboard_expressions
from tests.platform_servers import free_port, wait_port
from tests.torchserve_server import ServedModel
from workers.inference import TorchServeClient
from workers.media.synth import make_video

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The platform's server fixtures (this folder's conftest holds TorchServe's).
pg_database = platform_servers.pg_database
postgres_url = platform_servers.postgres_url
migrated_postgres_url = platform_servers.migrated_postgres_url
redis_url = platform_servers.redis_url

PEPPER = "observability-pepper"
WORKER_PROCESSES = 2  # more than one, so the exporter must merge prefork children
WINDOW_S = 4.0


@dataclass(frozen=True)
class Platform:
    api: httpx.Client
    env: dict[str, str]
    database_url: str
    api_port: int
    worker_port: int
    torchserve_port: int


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGTERM the process group it leads (Celery's children too); SIGKILL what is left."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _stale_counter_file(directory: Path) -> None:
    """What a previous worker run leaves behind: 5 succeeded videos. The worker must delete it at start."""
    name = "tsmindex_videos_indexed"
    key = mmap_key(f"{name}_total", name, ["outcome"], ["succeeded"], "")
    stale = MmapedDict(str(directory / "counter_999999999.db"))  # type: ignore[no-untyped-call]
    stale.write_value(key, 5.0, 0.0)  # type: ignore[no-untyped-call]
    stale.close()  # type: ignore[no-untyped-call]


def _launch(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def platform(
    torchserve: ServedModel,
    migrated_postgres_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    """API (uvicorn) and a prefork Celery worker as real processes, on the run's TorchServe."""
    base = tmp_path_factory.mktemp("observability")
    ts = torchserve.settings
    api_port, worker_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TSMINDEX_", "PROMETHEUS_"))},
        "TSMINDEX_MODE": "platform",
        "TSMINDEX_API_KEYS_PEPPER": PEPPER,
        "TSMINDEX_DATA_DIR": str(base / "var"),
        "TSMINDEX_DATABASE_URL": migrated_postgres_url,
        "TSMINDEX_REDIS_URL": redis_url,
        "TSMINDEX_STORAGE_BACKEND": "local",  # API and worker share this machine's data dir
        "TSMINDEX_INFERENCE_BACKEND": "torchserve",
        "TSMINDEX_TORCHSERVE_INFERENCE_URL": ts.torchserve_inference_url,
        "TSMINDEX_TORCHSERVE_MANAGEMENT_URL": ts.torchserve_management_url,
        "TSMINDEX_TORCHSERVE_METRICS_URL": ts.torchserve_metrics_url,
        "TSMINDEX_TORCHSERVE_KEY_FILE": str(ts.torchserve_key_file),
        "TSMINDEX_MODEL_NAME": ts.model_name,
        "TSMINDEX_MODEL_VERSION": torchserve.card_version,
        "TSMINDEX_NUM_SEGMENTS": str(torchserve.clip_shape[0]),
        "TSMINDEX_CLIP_RESIZE": "73",
        "TSMINDEX_CLIP_CROP": str(torchserve.clip_shape[1]),
        "TSMINDEX_WINDOW_S": str(WINDOW_S),
        "TSMINDEX_API_PORT": str(api_port),
        "TSMINDEX_WORKER_METRICS_PORT": str(worker_port),
        "PROMETHEUS_MULTIPROC_DIR": str(base / "worker-metrics"),
        "COLUMNS": "200",
    }
    (base / "worker-metrics").mkdir()
    _stale_counter_file(base / "worker-metrics")

    settings = Settings(database_url=migrated_postgres_url, api_keys_pepper=SecretStr(PEPPER))
    engine = create_db_engine(migrated_postgres_url)
    with session_factory(engine).begin() as session:
        _, key = create_api_key(session, settings, name="observability")
    engine.dispose()

    bin_dir = Path(sys.executable).parent
    # Only the worker shares its processes' files; an API given the same directory would export them twice.
    api_env = {k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    # Two uvicorn processes: the API's counters must add up across them, whichever one is scraped.
    api = _launch([str(bin_dir / "tsmindex"), "api", "--workers", "2"], api_env, base / "api.log")
    worker = _launch(
        [str(bin_dir / "tsmindex"), "worker", "--concurrency", str(WORKER_PROCESSES), "--loglevel", "INFO"],
        env,
        base / "worker.log",
    )
    try:
        wait_port(api_port, timeout_s=60, proc=api)
        wait_port(worker_port, timeout_s=60, proc=worker)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            yield Platform(
                api=client,
                env=env,
                database_url=migrated_postgres_url,
                api_port=api_port,
                worker_port=worker_port,
                torchserve_port=int(ts.torchserve_metrics_url.rsplit(":", 1)[1]),
            )
    finally:
        _stop(worker)
        _stop(api)


@pytest.fixture(scope="module")
def prometheus(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's Prometheus on a free port, scraping the three exporters every second, with our rules."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed (infra/scripts/test.sh installs Debian's package)")
    base = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for job, port in (
                ("tsmindex-api", platform.api_port),
                ("tsmindex-worker", platform.worker_port),
                ("torchserve", platform.torchserve_port),
            )
        ],
    }
    (base / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = _launch(
        [
            binary,
            f"--config.file={base / 'prometheus.yml'}",
            f"--storage.tsdb.path={base / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        dict(os.environ),
        base / "prometheus.log",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (base / "prometheus.log").read_text()
            time.sleep(0.2)
        yield url
    finally:
        _stop(proc)


def query(url: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def scalar(url: str, expr: str) -> float | None:
    result = query(url, expr)
    return float(result[0]["value"][1]) if result else None


def wait_until(url: str, expr: str, expected: float, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (value := scalar(url, expr)) != expected:
        assert time.monotonic() < deadline, f"{expr} = {value}, expected {expected}"
        time.sleep(0.5)


def wait_for_series(url: str, expr: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while scalar(url, expr) is None:
        assert time.monotonic() < deadline, f"no data for {expr}"
        time.sleep(0.5)


def _upload(platform: Platform, path: Path) -> str:
    with path.open("rb") as f:
        response = platform.api.post("/v1/videos", files={"file": (path.name, f, "video/mp4")})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_every_dashboard_expression_returns_data(
    platform: Platform, prometheus: str, torchserve: ServedModel, tmp_path: Path
) -> None:
    # Sizes and lengths no other test uses: the same bytes would be deduplicated against their index.
    videos = [
        make_video(tmp_path / f"obs-{i}.mp4", frames=frames, fps=25.0, size=(112, 80))
        for i, frames in enumerate((37, 61, 143))
    ]
    corrupt = tmp_path / "truncated.mp4"
    corrupt.write_bytes(videos[0].read_bytes()[:1500])  # a real MP4 header, nothing decodable
    files = [*videos, corrupt]
    wait_until(prometheus, 'count(up{job=~"tsmindex-api|tsmindex-worker|torchserve"} == 1)', 3)
    # TorchServe creates the handler's histogram at its first batch, and a series' first sample is
    # no increase to rate(): have it scraped before the videos' batches, or their rate could be 0.
    with TorchServeClient(torchserve.settings) as client:
        client.classify([np.zeros(torchserve.clip_shape, np.uint8)])
    wait_for_series(prometheus, "sum(tsmindex_handler_batch_size_count)")

    job_ids = [_upload(platform, path) for path in files]
    deadline = time.monotonic() + 120
    while True:
        jobs = [platform.api.get(f"/v1/jobs/{job_id}").json() for job_id in job_ids]
        if all(job["status"] in ("succeeded", "failed") for job in jobs):
            break
        assert time.monotonic() < deadline, jobs
        time.sleep(0.5)
    assert [job["status"] for job in jobs] == ["succeeded"] * 3 + ["failed"]
    reason = jobs[-1]["reason"]

    video_ids = [job["video_id"] for job in jobs[:3]]
    engine = create_db_engine(platform.database_url)
    with session_factory(engine)() as session:
        clips = session.execute(
            select(func.count(distinct(tuple_(WindowLabel.video_id, WindowLabel.window_index)))).where(
                WindowLabel.video_id.in_([uuid.UUID(v) for v in video_ids])
            )
        ).scalar_one()
        succeeded_jobs = session.execute(
            select(func.count()).select_from(Job).where(Job.status == "succeeded")
        ).scalar_one()
    engine.dispose()

    # The worker's exporter merges its children exactly (and ignored the stale file).
    wait_until(prometheus, 'sum(tsmindex_videos_indexed_total{outcome="succeeded"})', 3)
    assert scalar(prometheus, 'sum(tsmindex_videos_indexed_total{outcome="failed"})') == 1
    assert scalar(prometheus, f'sum(tsmindex_job_errors_total{{reason="{reason}"}})') == 1
    assert scalar(prometheus, "sum(tsmindex_clips_inferred_total)") == clips > 0
    assert scalar(prometheus, "sum(tsmindex_index_latency_seconds_count)") == 3
    assert scalar(prometheus, 'sum(tsmindex_stage_duration_seconds_count{stage="inference"})') == 3
    uploaded = sum(p.stat().st_size for p in files)
    assert scalar(prometheus, "sum(tsmindex_uploaded_bytes_total)") == uploaded
    # The uploads came over one connection, so one uvicorn process counted them; scrapes over new
    # connections reach either process, and each must report them all.
    for _ in range(8):
        text = httpx.get(f"http://127.0.0.1:{platform.api_port}/metrics", timeout=10).text
        assert f"tsmindex_uploaded_bytes_total {float(uploaded)}" in text
    assert scalar(prometheus, "sum(tsmindex_jobs_in_flight)") == 0
    assert scalar(prometheus, 'max(tsmindex_queue_depth{queue="index"})') == 0
    assert scalar(prometheus, 'max(tsmindex_jobs{status="running"})') == 0
    assert scalar(prometheus, "min(tsmindex_collector_up)") == 1
    assert (scalar(prometheus, "sum(tsmindex_handler_clips_total)") or 0) >= clips

    # Rates need two samples after the last change, and the rules one evaluation more.
    time.sleep(3)
    empty: dict[str, list[dict[str, Any]]] = {}
    for expr in dashboard_expressions():
        result = query(prometheus, expr)
        values = [float(s["value"][1]) for s in result]
        if not result or not any(math.isfinite(v) for v in values):
            empty[expr] = result
    assert empty == {}
    p95 = scalar(prometheus, "tsmindex:index_latency_seconds:p95_5m")
    assert p95 is not None and 0 < p95 < 120

    status = subprocess.run(
        [str(Path(sys.executable).parent / "tsmindex"), "status", "--prometheus-url", prometheus],
        env=platform.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    rows = {
        cells[0]: cells[1]
        for line in status.stdout.splitlines()
        if len(cells := [c.strip() for c in line.strip("│ ").split("│")]) == 3
    }
    assert rows["videos indexed since start (succeeded)"] == "3"
    assert rows["videos indexed since start (failed)"] == "1"
    assert rows[f"job errors since start ({reason})"] == "1"
    assert rows["jobs succeeded"] == str(succeeded_jobs)  # the database is the session's, shared
    assert rows["queue depth (index)"] == "0"
    assert json.dumps(rows).count("no data") == 0
