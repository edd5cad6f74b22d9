"""``tsmindex make-dataset from-index``: the moments kept are cut at their exact times, written once
per moment, and read back by the training loader with their labels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from services.core.config import get_settings
from services.core.db import create_db_engine, session_factory, upgrade_database
from services.core.models import LabelSegment, Video
from services.core.storage import make_storage
from workers.cli import app
from workers.media.synth import make_video, read_index
from workers.training.datasets import load_samples

FPS = 10.0


@pytest.fixture()
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    for name in ("TSMINDEX_DATABASE_URL", "TSMINDEX_STORAGE_BACKEND", "TSMINDEX_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TSMINDEX_DATA_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    engine = create_db_engine(get_settings().resolved_database_url)
    upgrade_database(engine)
    yield engine
    engine.dispose()
    get_settings.cache_clear()


def _moment(video: Video, label: str, start_ms: int, end_ms: int, score: float) -> LabelSegment:
    return LabelSegment(
        video_id=video.id,
        model_name="tsm",
        model_version="2",
        label=label,
        label_index=0,
        score=score,
        start_ms=start_ms,
        end_ms=end_ms,
        windows=1,
        mean_score=score,
    )


def _frame_indices(path: Path) -> list[int]:
    with av.open(str(path)) as container:
        return [read_index(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]


def test_from_index_cuts_each_kept_moment_at_its_times(engine: Engine, tmp_path: Path) -> None:
    # Two indexed videos of 40 and 41 frames at 10 fps, each frame painted with its index: a clip of
    # [start_ms, end_ms) must hold exactly frames start/100 .. end/100 - 1.
    storage = make_storage(get_settings())
    videos = []
    for i in range(2):
        src = make_video(tmp_path / f"src{i}.mp4", frames=40 + i, fps=FPS, size=(128, 96))
        with src.open("rb") as f:
            stored = storage.put_stream(f"uploads/{i}", f)
        videos.append(Video(sha256=stored.sha256, storage_key=stored.key, filename=src.name))
    with session_factory(engine).begin() as session:
        session.add_all(videos)
        session.flush()
        session.add_all(
            [
                _moment(videos[0], "juggling balls", 0, 1000, 0.9),
                _moment(videos[0], "juggling balls", 2000, 3500, 0.7),
                _moment(videos[0], "juggling balls", 3000, 4000, 0.3),  # below --min-score
                _moment(videos[1], "skipping rope", 1000, 2000, 0.8),
                _moment(videos[1], "dancing", 0, 4000, 0.95),  # another label
            ]
        )
    out = tmp_path / "dataset"
    result = CliRunner().invoke(
        app,
        [
            "make-dataset", "from-index", str(out), "--label", "juggling balls", "--label", "skipping rope",
            "--min-score", "0.5", "--short-side", "64",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "3 clips of 3 moments" in result.output

    data = load_samples(out / "labels.csv")
    assert data.classes == ("juggling balls", "skipping rope")
    clips = {(s.path.relative_to(out).as_posix(), data.classes[s.label]) for s in data.samples}
    v0, v1 = videos[0].id.hex[:12], videos[1].id.hex[:12]
    assert clips == {
        (f"juggling_balls/{v0}_000000000.mp4", "juggling balls"),
        (f"juggling_balls/{v0}_000002000.mp4", "juggling balls"),
        (f"skipping_rope/{v1}_000001000.mp4", "skipping rope"),
    }
    assert _frame_indices(out / f"juggling_balls/{v0}_000000000.mp4") == list(range(0, 10))
    assert _frame_indices(out / f"juggling_balls/{v0}_000002000.mp4") == list(range(20, 35))
    assert _frame_indices(out / f"skipping_rope/{v1}_000001000.mp4") == list(range(10, 20))
    with av.open(str(out / f"skipping_rope/{v1}_000001000.mp4")) as clip:
        assert (clip.streams.video[0].width, clip.streams.video[0].height) == (86, 64)


def test_from_index_says_when_nothing_matches(engine: Engine, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["make-dataset", "from-index", str(tmp_path / "d"), "--label", "nothing"]
    )
    assert result.exit_code == 1 and "no moment of nothing" in result.output
    assert not (tmp_path / "d").exists()
