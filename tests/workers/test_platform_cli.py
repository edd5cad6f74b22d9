"""`tsmindex index` / `search` / `apikey create` / `db upgrade` as a person runs them (embedded mode)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from services.core.config import get_settings
from services.core.db import create_db_engine, session_factory
from services.core.models import ApiKey, LabelSegment, WindowLabel
from services.core.security import hash_api_key
from tests import platform_servers
from tests.workers.media.test_files import write_gif
from workers.cli import app
from workers.demo import write_sample_videos

tiny_checkpoint = platform_servers.tiny_checkpoint


@pytest.fixture()
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in ("TSMINDEX_DATABASE_URL", "TSMINDEX_CHECKPOINT_PATH", "TSMINDEX_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TSMINDEX_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("TSMINDEX_WINDOW_S", "4")
    get_settings.cache_clear()
    yield tmp_path / "var"
    get_settings.cache_clear()


def test_index_then_search(data_dir: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    videos = write_sample_videos(tmp_path / "videos")
    (tmp_path / "videos" / "notes.txt").write_text("not a video, and skipped: only video suffixes are taken")
    write_gif(tmp_path / "videos" / "animated.gif", frames=6)
    runner = CliRunner()
    first = runner.invoke(
        app, ["index", str(tmp_path / "videos"), "--checkpoint", str(tiny_checkpoint)], terminal_width=300
    )
    assert first.exit_code == 0, first.output
    assert first.output.count("succeeded") == 4  # the three videos and the animated GIF
    assert re.search(r"skipped \S*notes\.txt: extension", first.output)
    assert all(path.name in first.output for path in videos)
    assert (data_dir / "tsmindex.db").is_file()

    again = runner.invoke(
        app,
        ["index", str(videos[0]), str(videos[0]), "--checkpoint", str(tiny_checkpoint)],
        terminal_width=200,
    )
    assert again.exit_code == 0, again.output
    assert again.output.count("(already") == 1  # named twice, indexed once, not redone

    from workers.embedded import describe, embedded_context, submit_file

    ctx = embedded_context(get_settings(), tiny_checkpoint)
    job_id, todo = submit_file(ctx, videos[2])
    best = describe(ctx, videos[2], job_id).labels[0][0]
    ctx.close()
    assert not todo
    found = runner.invoke(app, ["search", best], terminal_width=200)
    assert found.exit_code == 0, found.output
    assert "pan-long.mp4" in found.output
    missing = runner.invoke(app, ["search", "no such label"])
    assert missing.exit_code == 1

    engine = create_db_engine(get_settings().resolved_database_url)
    with session_factory(engine)() as session:
        segments = session.scalars(
            select(LabelSegment)
            .where(LabelSegment.label == best)
            .order_by(LabelSegment.score.desc(), LabelSegment.id.desc())
        ).all()
        windows = session.scalars(select(WindowLabel).where(WindowLabel.label == best)).all()
    engine.dispose()
    assert segments and sum(g.windows for g in segments) == len(windows)  # every window in one moment
    moments = runner.invoke(app, ["search", best, "--moments"], terminal_width=200)
    assert moments.exit_code == 0, moments.output
    shown = [line for line in moments.output.splitlines() if re.search(r"│ \d\.\d{3} │", line)]
    assert len(shown) == len(segments)
    for line, window in zip(shown, segments, strict=True):  # best first, each with its time span
        assert f"{window.score:.3f}" in line
        assert f"{window.start_ms / 1000:.1f} s" in line and f"{window.end_ms / 1000:.1f} s" in line


def test_corrupt_file_fails_the_run_with_its_reason(
    data_dir: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    video = write_sample_videos(tmp_path / "videos", count=1)[0]
    bad = tmp_path / "videos" / "broken.mp4"
    bad.write_bytes(video.read_bytes()[:1500])
    result = CliRunner().invoke(
        app, ["index", str(tmp_path / "videos"), "--checkpoint", str(tiny_checkpoint)], terminal_width=200
    )
    assert result.exit_code == 1
    assert "failed: corrupt" in result.output
    assert "succeeded" in result.output  # the other file still indexed


def test_db_upgrade_and_apikey_create(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TSMINDEX_API_KEYS_PEPPER", "pepper")
    get_settings.cache_clear()
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    created = runner.invoke(app, ["apikey", "create", "ci"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith("tsm_") and "\n" not in key
    engine = create_db_engine(get_settings().resolved_database_url)
    with session_factory(engine)() as session:
        row = session.scalars(select(ApiKey)).one()
        assert (row.name, row.key_hash, row.prefix) == ("ci", hash_api_key(key, "pepper"), key[:12])
    engine.dispose()


def test_demo_labels_fresh_motion_clips_with_the_shipped_model(data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--videos", "8"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert result.output.count("succeeded") == 8
    assert "8/8 clips got their true direction as the top label" in result.output
    assert sorted(p.parent.name for p in (data_dir / "samples" / "motion").glob("*/*.mp4")) == sorted(
        ["down", "left", "right", "up"] * 2
    )
