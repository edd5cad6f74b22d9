"""Reindex through the real pieces: 200 indexed videos move to a second model version with
``tsmindex reindex``, the first run is killed (SIGKILL) while it waits on the queue cap, the same
command resumes it, and every job runs once. The second version has the first one's weights under
another version string, so ``tsmindex compare`` must report full agreement on the videos both
indexed and name the ones the reindex left out.

Celery worker processes (``tsmindex worker``, which registers its model) with in-process inference
on a tiny ResNet-18 TSM, PostgreSQL (a database of this module's own: the served-model registry is
global to one), Redis and local object storage."""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from services.core.config import Settings
from services.core.db import create_db_engine, session_factory
from services.core.models import Backfill, Job, JobStatus, ServedModel, Video
from services.core.storage import make_storage
from tests import platform_servers
from tests.platform_servers import TINY_CROP, TINY_RESIZE
from workers.media.synth import make_video

pytestmark = pytest.mark.integration

private_postgres_url = platform_servers.private_postgres_url
redis_url = platform_servers.redis_url

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
VIDEOS = 200
SELECTED = 100  # clip-100 .. clip-199: the second version's reindex takes these
CAP = 30


def _checkpoints(tmp: Path) -> tuple[Path, str, Path, str]:
    """Two checkpoints of the same weights under two versions."""
    import torch

    from model_store.tsm import build_tsm, save_checkpoint
    from workers.demo import random_model_card

    torch.manual_seed(0)
    model = build_tsm("resnet18", num_classes=400, num_segments=8).eval()
    card = random_model_card(resize=TINY_RESIZE, crop=TINY_CROP)
    second = dataclasses.replace(card, version=card.version + "-again")
    save_checkpoint(tmp / "a.pt", model, card)
    save_checkpoint(tmp / "b.pt", model, second)
    return tmp / "a.pt", card.version, tmp / "b.pt", second.version


@pytest.fixture(scope="module")
def env(
    private_postgres_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("reindex")
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("TSMINDEX_")},
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "200",
        "TSMINDEX_DATA_DIR": str(tmp / "var"),
        "TSMINDEX_DATABASE_URL": private_postgres_url,
        "TSMINDEX_REDIS_URL": redis_url,
        "TSMINDEX_WINDOW_S": "1.0",
        "TSMINDEX_TOP_K": "3",
        "TSMINDEX_BACKFILL_MAX_QUEUED": str(CAP),
        "TSMINDEX_BACKFILL_PAGE_SIZE": "20",
        "TSMINDEX_BACKFILL_POLL_S": "0.2",
    }


@pytest.fixture(scope="module")
def videos(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> list[uuid.UUID]:
    """200 stored videos that nothing has indexed yet."""
    tmp = tmp_path_factory.mktemp("clips")
    storage = make_storage(Settings(_env_file=None, data_dir=Path(env["TSMINDEX_DATA_DIR"])))  # type: ignore[call-arg]
    engine = create_db_engine(env["TSMINDEX_DATABASE_URL"])
    clip = make_video(tmp / "clip.mp4", frames=8, fps=8.0, size=(64, 48)).read_bytes()
    rows = []
    for i in range(VIDEOS):
        # A trailing MP4 'free' box: players ignore it, and it gives each copy its own bytes.
        body = clip + struct.pack(">I", 8 + 4) + b"free" + struct.pack(">I", i)
        stored = storage.put_stream(f"uploads/{i}", io.BytesIO(body))
        rows.append(Video(sha256=stored.sha256, storage_key=stored.key, filename=f"clip-{i:03d}.mp4"))
    assert len({r.sha256 for r in rows}) == VIDEOS
    with session_factory(engine).begin() as session:
        session.add_all(rows)
        session.flush()
        ids = [r.id for r in rows]
    engine.dispose()
    return ids


@pytest.fixture()
def start_worker(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[Path], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(checkpoint: Path) -> subprocess.Popen[bytes]:
        worker_env = {
            **env,
            "TSMINDEX_CHECKPOINT_PATH": str(checkpoint),
            "TSMINDEX_INFERENCE_BACKEND": "inprocess",
            "TSMINDEX_WORKER_METRICS_PORT": "0",
        }
        with (tmp_path / f"worker-{len(procs)}.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [str(BIN / "tsmindex"), "worker", "-c", "2", "--loglevel", "WARNING"],
                    cwd=ROOT,
                    env=worker_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        return procs[-1]

    yield start
    for proc in procs:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # warm shutdown: finish the running job
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_served(engine: Engine, version: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        with session_factory(engine)() as session:
            row = session.get(ServedModel, ("tsm", version))
            if row is not None and row.is_default:
                return
        assert proc.poll() is None and time.monotonic() < deadline, "the worker never registered its model"
        time.sleep(0.2)


def _reindex(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "tsmindex"), "reindex", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _rows(engine: Engine, version: str) -> list[Backfill]:
    with session_factory(engine)() as session:
        return list(
            session.scalars(
                select(Backfill).where(Backfill.model_version == version).order_by(Backfill.created_at)
            )
        )


def test_reindex_of_200_videos_killed_resumed_and_compared(
    env: dict[str, str],
    videos: list[uuid.UUID],
    start_worker: Callable[[Path], subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    a_path, a, b_path, b = _checkpoints(tmp_path)
    engine = create_db_engine(env["TSMINDEX_DATABASE_URL"])
    try:
        # 1. The first version indexes all 200 (a reindex of videos no version has indexed).
        worker = start_worker(a_path)
        _wait_served(engine, a, worker)
        first = _reindex(env, "--model", f"tsm:{a}")
        out, _ = first.communicate(timeout=600)
        assert first.returncode == 0, out
        assert [(r.status, r.jobs_created, r.jobs_succeeded) for r in _rows(engine, a)] == [
            ("completed", VIDEOS, VIDEOS)
        ]
        _stop(worker)

        # 2. The second version's worker registers it and stops: with no worker running, its reindex
        # of clip-1xx lists up to the cap and waits. Kill it.
        worker = start_worker(b_path)
        _wait_served(engine, b, worker)
        _stop(worker)
        args = ["--model", f"tsm:{b}", "--where", f"from=tsm:{a}", "--where", "prefix=clip-1"]
        killed = _reindex(env, *args)
        deadline = time.monotonic() + 120
        while not (_rows(engine, b) and _rows(engine, b)[0].jobs_created >= CAP):
            assert time.monotonic() < deadline and killed.poll() is None, killed.communicate()[0]
            time.sleep(0.2)
        time.sleep(1.0)
        killed.kill()
        assert killed.wait(timeout=10) == -signal.SIGKILL
        [interrupted] = _rows(engine, b)
        assert interrupted.status == "listing" and interrupted.jobs_created == CAP

        # 3. The second version's worker starts again; the same command resumes and finishes.
        worker = start_worker(b_path)
        _wait_served(engine, b, worker)
        resumed = _reindex(env, *args)
        out, _ = resumed.communicate(timeout=600)
        assert resumed.returncode == 0, out
        assert f"resuming after video {interrupted.cursor_key}" in out, out
        [done] = _rows(engine, b)
        assert done.id == interrupted.id and done.kind == "reindex"
        counts = (
            done.status,
            done.objects_listed,
            done.objects_skipped,
            done.jobs_created,
            done.jobs_succeeded,
        )
        assert counts == ("completed", SELECTED, 0, SELECTED, SELECTED)
        with session_factory(engine)() as session:
            jobs = session.scalars(select(Job).where(Job.model_version == b)).all()
            selected = session.scalars(select(Video.id).where(Video.filename.startswith("clip-1"))).all()
            old = session.scalar(select(func.count()).select_from(Job).where(Job.model_version == a))
        # One job per selected video, each run once; the old version's jobs are all still there.
        assert sorted(j.video_id for j in jobs) == sorted(selected) and len(selected) == SELECTED
        assert {(j.status, j.attempts) for j in jobs} in (
            {(JobStatus.succeeded, 0)},
            {(JobStatus.succeeded, 1)},
        )
        assert old == VIDEOS

        # 4. Run again: nothing new to do.
        again = _reindex(env, *args)
        out, _ = again.communicate(timeout=120)
        assert again.returncode == 0, out
        second = _rows(engine, b)[-1]
        assert (second.objects_listed, second.objects_skipped, second.jobs_created) == (SELECTED, SELECTED, 0)

        # 5. Same weights: the versions agree on every video both indexed; the rest only a indexed.
        compare = subprocess.run(
            [str(BIN / "tsmindex"), "compare", f"tsm:{a}", f"tsm:{b}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert compare.returncode == 0, compare.stdout + compare.stderr
        figures = {
            cells[0].strip(): cells[1].strip()
            for line in compare.stdout.splitlines()
            if len(cells := line.strip("│ ").split("│")) == 2
        }
        assert figures == {
            "videos compared (indexed by both)": str(SELECTED),
            "indexed only by a / only by b": f"{VIDEOS - SELECTED} / 0",
            "top-1 agreement": "100.0 %",
            "mean Jaccard of label sets": "1.000",
            "videos changed": "0",
            "moments moved": "0",
        }
    finally:
        engine.dispose()
