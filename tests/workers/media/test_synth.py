"""The synthetic clip generator that tests, benchmarks and demos rely on."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from workers.media.synth import MAX_INDEX, make_video, paint_index, read_index


@pytest.mark.parametrize("index", [0, 1, 1234, MAX_INDEX])
def test_index_round_trips_through_pixels(index: int) -> None:
    image = np.full((60, 80, 3), 128, dtype=np.uint8)
    paint_index(image, index)
    assert read_index(image) == index
    with pytest.raises(ValueError, match="orientation"):
        read_index(np.rot90(image).copy())


def test_grainy_clip_keeps_its_indices(tmp_path: Path) -> None:
    path = make_video(tmp_path / "grain.mp4", frames=12, size=(96, 64), grain=8, options={"crf": "18"})
    with av.open(str(path)) as container:
        indices = [read_index(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    assert indices == list(range(12))


def test_rejects_what_it_cannot_make(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="grain"):
        make_video(tmp_path / "a.mp4", frames=2, grain=9)
    with pytest.raises(ValueError, match="64"):
        make_video(tmp_path / "b.mp4", frames=2, size=(48, 32), codec="libx265")
    with pytest.raises(ValueError, match="bits"):
        paint_index(np.zeros((32, 32, 3), dtype=np.uint8), MAX_INDEX + 1)
