"""The platform end to end, every part a real process: the API (uvicorn), a Celery worker
(prefork), TorchServe, PostgreSQL, Redis and a moto S3 server, started by infra/scripts/stack.sh."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from services.core.db import create_db_engine, session_factory
from services.core.models import Job, VideoLabel, WindowLabel
from tests.platform_servers import free_port
from tests.torchserve_server import ServedModel
from workers.demo import write_sample_videos
from workers.media.synth import make_video

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "infra" / "scripts" / "stack.sh"
WINDOW_S = 4.0
TOP_K = 5


@dataclass(frozen=True)
class Stack:
    api: httpx.Client
    env: dict[str, str]
    database_url: str


@pytest.fixture(scope="module")
def stack(
    torchserve: ServedModel,
    private_postgres_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    # A database of its own: stack.sh registers the served model, a row global to its database.
    postgres_url = private_postgres_url
    base = tmp_path_factory.mktemp("stack")
    ts = torchserve.settings
    api_port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TSMINDEX_")},
        "TSMINDEX_STACK_DIR": str(base / "stack"),
        "TSMINDEX_STACK_COMPONENTS": "s3 api worker",  # TorchServe: the session's own server
        "TSMINDEX_STACK_SKIP_SERVICES": "1",  # PostgreSQL and Redis are up (infra/scripts/test.sh)
        "TSMINDEX_STACK_ARCHIVE": str(torchserve.archive),
        "TSMINDEX_DATA_DIR": str(base / "var"),
        "TSMINDEX_DATABASE_URL": postgres_url,
        "TSMINDEX_REDIS_URL": redis_url,
        "TSMINDEX_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "TSMINDEX_S3_BUCKET": f"e2e-{secrets.token_hex(4)}",
        "TSMINDEX_API_PORT": str(api_port),
        "TSMINDEX_WORKER_METRICS_PORT": str(free_port()),
        "TSMINDEX_TORCHSERVE_INFERENCE_URL": ts.torchserve_inference_url,
        "TSMINDEX_TORCHSERVE_MANAGEMENT_URL": ts.torchserve_management_url,
        "TSMINDEX_TORCHSERVE_METRICS_URL": ts.torchserve_metrics_url,
        "TSMINDEX_TORCHSERVE_KEY_FILE": str(ts.torchserve_key_file),
        "TSMINDEX_MODEL_NAME": ts.model_name,
        "TSMINDEX_WINDOW_S": str(WINDOW_S),
        "TSMINDEX_TOP_K": str(TOP_K),
    }
    up = subprocess.run(["bash", str(STACK), "up"], env=env, capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, f"stack.sh up failed:\n{up.stdout}\n{up.stderr}"
        key = (base / "stack" / "api-key").read_text().strip()
        with httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as api:
            yield Stack(api=api, env=env, database_url=postgres_url)
    finally:
        down = subprocess.run(
            ["bash", str(STACK), "down"], env=env, capture_output=True, text=True, timeout=180
        )
        assert down.returncode == 0, down.stderr
        status = subprocess.run(["bash", str(STACK), "status"], env=env, capture_output=True, text=True)
        assert status.returncode == 3 and "running (pid" not in status.stdout


def _upload(stack: Stack, path: Path) -> httpx.Response:
    with path.open("rb") as f:
        return stack.api.post("/v1/videos", files={"file": (path.name, f, "video/mp4")})


def _wait(stack: Stack, job_ids: list[str], timeout_s: float = 150.0) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        jobs = {job_id: stack.api.get(f"/v1/jobs/{job_id}").json() for job_id in job_ids}
        if all(job["status"] in ("succeeded", "failed") for job in jobs.values()):
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs not finished after {timeout_s} s: {jobs}")
        time.sleep(0.5)


def test_upload_index_search_dedupe_and_a_corrupt_file(stack: Stack, tmp_path: Path) -> None:
    assert stack.api.get("/readyz").json() == {
        "status": "ready",
        "checks": {"database": "ok", "redis": "ok", "torchserve": "ok"},
    }
    videos = write_sample_videos(tmp_path / "videos")
    accepted = [_upload(stack, path) for path in videos]
    assert [r.status_code for r in accepted] == [202, 202, 202]
    job_ids = [r.json()["id"] for r in accepted]
    jobs = _wait(stack, job_ids)
    assert [jobs[j]["status"] for j in job_ids] == ["succeeded"] * 3, jobs
    assert all(jobs[j]["attempts"] == 0 and jobs[j]["progress"] == 1.0 for j in job_ids)  # no failure

    # Labels and windows are stored: the 12 s video has three 4 s windows.
    details = [stack.api.get(f"/v1/videos/{jobs[j]['video_id']}").json() for j in job_ids]
    assert [d["duration_s"] for d in details] == [3.0, 2.5, 12.0]
    assert [len(d["labels"]) for d in details] == [TOP_K] * 3
    assert [[(w["start_ms"], w["end_ms"]) for w in d["windows"]] for d in details][2] == [
        (0, 4000),
        (4000, 8000),
        (8000, 12000),
    ]
    assert all(len(w["labels"]) == TOP_K for d in details for w in d["windows"])

    # Search finds each video under its best label.
    for detail in details:
        best = detail["labels"][0]
        page = stack.api.get("/v1/videos", params={"label": best["label"], "limit": 500}).json()
        hits = {item["video_id"]: item["score"] for item in page["items"]}
        assert hits[detail["id"]] == best["score"]
    vocabulary = {item["label"] for item in stack.api.get("/v1/labels").json()["items"]}
    assert {d["labels"][0]["label"] for d in details} <= vocabulary

    # The same bytes again: the existing job, no second index.
    again = _upload(stack, videos[0])
    assert (again.status_code, again.json()["id"], again.json()["duplicate"]) == (200, job_ids[0], True)

    # A damaged file fails with its reason; the worker goes on to the next video.
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(videos[0].read_bytes()[:1500])
    bad = _upload(stack, corrupt)
    assert bad.status_code == 202
    after = _upload(stack, make_video(tmp_path / "after.mp4", frames=48, fps=24.0, size=(128, 96)))
    final = _wait(stack, [bad.json()["id"], after.json()["id"]])
    assert (final[bad.json()["id"]]["status"], final[bad.json()["id"]]["reason"]) == ("failed", "corrupt")
    assert final[after.json()["id"]]["status"] == "succeeded"

    engine = create_db_engine(stack.database_url)
    with session_factory(engine)() as session:
        video_id = jobs[job_ids[0]]["video_id"]
        assert session.scalar(select(func.count()).select_from(Job).where(Job.video_id == video_id)) == 1
        assert (
            session.scalar(
                select(func.count()).select_from(VideoLabel).where(VideoLabel.video_id == video_id)
            )
            == TOP_K
        )
        # Window labels for the three videos and the one after the damaged file; none for that one.
        mine = [
            uuid.UUID(v)
            for v in [jobs[j]["video_id"] for j in job_ids]
            + [final[after.json()["id"]]["video_id"], final[bad.json()["id"]]["video_id"]]
        ]
        assert (
            session.scalar(
                select(func.count(func.distinct(WindowLabel.video_id))).where(WindowLabel.video_id.in_(mine))
            )
            == 4
        )
    engine.dispose()
    status = subprocess.run(["bash", str(STACK), "status"], env=stack.env, capture_output=True, text=True)
    assert status.returncode == 0, status.stdout
