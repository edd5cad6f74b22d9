"""``tsmindex models retire``: one version's rows go, in batches; the other version's stay."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from services.core.config import get_settings
from services.core.db import create_db_engine, session_factory, upgrade_database
from services.core.models import IndexedWindow, Job, JobStatus, LabelSegment, Video, VideoLabel, WindowLabel
from workers.cli import app

TABLES = (WindowLabel, LabelSegment, VideoLabel, Job)


@pytest.fixture()
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    for name in (
        "TSMINDEX_DATABASE_URL",
        "TSMINDEX_MODEL_NAME",
        "TSMINDEX_MODEL_VERSION",
        "TSMINDEX_API_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TSMINDEX_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    engine = create_db_engine(get_settings().resolved_database_url)
    upgrade_database(engine)
    yield engine
    engine.dispose()
    get_settings.cache_clear()


def _index(engine: Engine, version: str, videos: int, windows: int) -> None:
    with session_factory(engine).begin() as session:
        for v in range(videos):
            video = Video(sha256=uuid.uuid4().hex, filename=f"{v}.mp4")
            session.add(video)
            session.flush()
            common = {"video_id": video.id, "model_name": "tsm", "model_version": version}
            session.add(Job(**common, status=JobStatus.succeeded))
            session.add(VideoLabel(**common, label="run", label_index=0, score=0.9, rank=0))
            session.add(
                LabelSegment(
                    **common,
                    label="run",
                    label_index=0,
                    score=0.9,
                    start_ms=0,
                    end_ms=1000,
                    windows=1,
                    mean_score=0.9,
                )
            )
            for w in range(windows):
                session.add(
                    WindowLabel(
                        **common,
                        label="run",
                        label_index=0,
                        score=0.9,
                        window_index=w,
                        start_ms=w * 1000,
                        end_ms=w * 1000 + 1000,
                        rank=0,
                    )
                )


def _counts(engine: Engine, version: str) -> list[int]:
    with session_factory(engine)() as session:
        return [
            session.scalar(
                select(func.count()).select_from(t).where(t.model_name == "tsm", t.model_version == version)
            )
            or 0
            for t in TABLES
        ]


def test_retire_deletes_one_version_in_batches_and_keeps_the_other(engine: Engine) -> None:
    _index(engine, "old", videos=3, windows=5)
    _index(engine, "new", videos=2, windows=4)
    assert _counts(engine, "old") == [15, 3, 3, 3]
    result = CliRunner().invoke(app, ["models", "retire", "tsm:old", "--batch-size", "4", "--yes"])
    assert result.exit_code == 0, result.output
    assert "tsm:old retired" in result.output
    assert _counts(engine, "old") == [0, 0, 0, 0]
    assert _counts(engine, "new") == [8, 2, 2, 2]
    # Nothing left: saying so is an error, not a silent success.
    again = CliRunner().invoke(app, ["models", "retire", "tsm:old", "--yes"])
    assert again.exit_code == 1 and "holds nothing of tsm:old" in again.output


def test_retire_refuses_the_served_version_and_a_malformed_one(engine: Engine) -> None:
    _index(engine, "1", videos=1, windows=1)  # the settings' default version is tsm:1
    served = CliRunner().invoke(app, ["models", "retire", "tsm:1", "--yes"])
    assert served.exit_code == 2 and "--force" in served.output
    assert _counts(engine, "1") == [1, 1, 1, 1]
    assert CliRunner().invoke(app, ["models", "retire", "1", "--yes"]).exit_code == 2
    forced = CliRunner().invoke(app, ["models", "retire", "tsm:1", "--yes", "--force"])
    assert forced.exit_code == 0, forced.output
    assert _counts(engine, "1") == [0, 0, 0, 0]


def test_retire_commits_batches_of_the_given_size(engine: Engine) -> None:
    from services.core.versions import ModelVersion, retire_version

    _index(engine, "old", videos=3, windows=5)
    batches: list[tuple[str, int]] = []
    deleted = retire_version(
        session_factory(engine),
        ModelVersion("tsm", "old"),
        batch_size=4,
        on_batch=lambda t, n: batches.append((t, n)),
    )
    assert batches == [("window_labels", n) for n in (4, 4, 4, 3)] + [
        ("label_segments", 3),
        ("video_labels", 3),
        ("jobs", 3),
    ]
    assert deleted == {
        "indexed_windows": 0,
        "window_labels": 15,
        "label_segments": 3,
        "video_labels": 3,
        "jobs": 3,
    }


def test_retire_removes_the_windows_and_their_thumbnails(engine: Engine, tmp_path: Path) -> None:
    import numpy as np

    from services.core.storage import LocalStorage
    from services.core.thumbnails import store_thumbnail
    from services.core.versions import ModelVersion, retire_version

    storage = LocalStorage(tmp_path / "objects")
    with session_factory(engine).begin() as session:
        video = Video(sha256=uuid.uuid4().hex, filename="w.mp4")
        session.add(video)
        session.flush()
        keys = [
            store_thumbnail(
                storage, job_id=uuid.uuid4(), window_index=n, frames=np.zeros((2, 8, 8, 3), np.uint8)
            )
            for n in range(3)
        ]
        session.add_all(
            IndexedWindow(
                video_id=video.id,
                model_name="tsm",
                model_version="old",
                window_index=n,
                start_ms=n * 1000,
                end_ms=(n + 1) * 1000,
                top_labels=[],
                thumbnail_key=key,
            )
            for n, key in enumerate(keys)
        )
    assert all(storage.exists(key) for key in keys)
    deleted = retire_version(
        session_factory(engine), ModelVersion("tsm", "old"), batch_size=2, storage=storage
    )
    assert deleted["indexed_windows"] == 3
    assert not any(storage.exists(key) for key in keys)
