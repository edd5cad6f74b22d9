"""`tsmindex index` with no model named, `tsmindex model build` and `tsmindex models`, against a local
host standing in for the TSM release host (same paths, TSMINDEX_MODEL_MIRROR_URL)."""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from services.core.config import get_settings
from services.core.db import create_db_engine, session_factory
from services.core.models import Job, VideoLabel
from tests.model_host import ReleaseHost, published_r50, release_host
from tests.platform_servers import free_port
from workers.cli import app
from workers.demo import write_sample_videos
from workers.weights import find_model

__all__ = ["published_r50", "release_host"]  # fixtures

R50 = find_model("tsm-r50-kinetics400")
assert R50.url is not None
R50_URL: str = R50.url


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Embedded mode in ``tmp_path``, a private model cache, no checkpoint configured."""
    unset = ("TSMINDEX_DATABASE_URL", "TSMINDEX_CHECKPOINT_PATH", "TSMINDEX_MODE", "TSMINDEX_DEFAULT_MODEL")
    for name in unset:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TSMINDEX_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("TSMINDEX_MODEL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TSMINDEX_WINDOW_S", "10")
    get_settings.cache_clear()
    yield tmp_path / "cache"
    get_settings.cache_clear()


def _mirror(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("TSMINDEX_MODEL_MIRROR_URL", url)
    get_settings.cache_clear()


def test_index_without_a_model_downloads_the_published_one_once_and_indexes(
    env: Path,
    tmp_path: Path,
    release_host: ReleaseHost,
    published_r50: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served = release_host.publish(R50_URL, published_r50)
    _mirror(monkeypatch, release_host.url)
    first, second = write_sample_videos(tmp_path / "videos", count=2)
    runner = CliRunner()

    result = runner.invoke(app, ["index", str(first)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.output
    assert release_host.gets[served] == 1
    version = hashlib.sha256(published_r50.read_bytes()).hexdigest()[:12]
    engine = create_db_engine(get_settings().resolved_database_url)
    with session_factory(engine)() as session:
        job = session.scalars(select(Job)).one()
        labels = session.scalars(select(VideoLabel).where(VideoLabel.video_id == job.video_id)).all()
    engine.dispose()
    assert (job.status, job.model_name, job.model_version) == (
        "succeeded",
        R50.filename.split(".")[0],
        version,
    )
    assert len(labels) == 5 and {label.model_version for label in labels} == {version}

    again = runner.invoke(app, ["index", str(second)], terminal_width=200)
    assert again.exit_code == 0, again.output
    assert release_host.gets[served] == 1  # cached: not downloaded again

    listed = runner.invoke(app, ["models"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if line.startswith("│ tsm-r50-kinetics400 "))
    assert f"{version}… (pinned)" in row and "│ yes " in row


def test_index_offline_fails_fast_and_names_the_ways_forward(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _mirror(monkeypatch, f"http://127.0.0.1:{free_port()}")  # the release host is absent
    video = write_sample_videos(tmp_path / "videos", count=1)[0]
    started = time.monotonic()
    result = CliRunner().invoke(app, ["index", str(video)], terminal_width=200)
    elapsed = time.monotonic() - started
    assert result.exit_code == 2, result.output
    assert elapsed < 5
    text = " ".join(result.output.split())
    assert "ModelUnavailableError: cannot download the model tsm-r50-kinetics400" in text
    assert "This machine seems to be offline. Two ways forward:" in text
    assert "- a local checkpoint: --checkpoint FILE (or TSMINDEX_CHECKPOINT_PATH=FILE)" in text
    assert "- the shipped motion model, for a demo: --model tsm-motion-mnv2-32px" in text
    assert not env.exists() or not any(env.iterdir())


def test_index_takes_the_shipped_model_by_name_offline(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.training.shipped import write_demo_clips

    _mirror(monkeypatch, f"http://127.0.0.1:{free_port()}")
    write_demo_clips(tmp_path / "clips", count=2, seed=5)
    result = CliRunner().invoke(
        app, ["index", str(tmp_path / "clips"), "--model", "tsm-motion-mnv2-32px"], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("succeeded") == 2


def test_models_pull_with_a_wrong_digest_keeps_nothing_and_show_tells_the_card(
    env: Path, release_host: ReleaseHost, published_r50: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release_host.publish(R50_URL, published_r50)
    _mirror(monkeypatch, release_host.url)
    runner = CliRunner()
    wrong = runner.invoke(app, ["models", "pull", "--sha256", "0" * 64], terminal_width=200)
    assert wrong.exit_code == 2
    assert f"expected {'0' * 64}" in " ".join(wrong.output.split())
    assert sorted(p.name for p in env.iterdir()) == ["pins.json"]

    removed = runner.invoke(app, ["models", "remove", R50.name])
    assert removed.exit_code == 0, removed.output
    pulled = runner.invoke(app, ["models", "pull"], terminal_width=200)
    assert pulled.exit_code == 0, pulled.output
    assert sorted(p.name for p in env.iterdir()) == sorted([R50.filename, "pins.json"])

    shown = runner.invoke(app, ["models", "show", R50.name], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    digest = hashlib.sha256(published_r50.read_bytes()).hexdigest()
    assert f"{digest} (pinned (first download" in text
    assert "arch=resnet50, num_classes=400, num_segments=8, shift_div=8" in text
    assert "400: abseiling, air drumming" in text and "zumba" in text
    assert "71.2%" in text


def test_model_build_without_a_model_archives_the_default_one(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shipped model as the default keeps the archive small (the published one takes a minute to
    # zip); fetching the published default is the same call `index` makes above.
    from model_store.archive import CARD_FILE

    _mirror(monkeypatch, f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("TSMINDEX_DEFAULT_MODEL", "tsm-motion-mnv2-32px")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["model", "build", "--out", str(tmp_path / "store")], terminal_width=200)
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(tmp_path / "store" / "tsm.mar") as archive:
        card = json.loads(archive.read(CARD_FILE))
    assert (card["name"], card["version"]) == ("tsm-motion", "mnv2-32px-1")
