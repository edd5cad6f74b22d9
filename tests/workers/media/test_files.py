"""The folder walker takes videos (animated GIFs included) and names every file it leaves out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.workers.media.videos import make_video, truncated_copy, write_text_as_video, write_unknown_codec
from workers.media import sample_clips
from workers.media.files import SkipReason, find_videos


def write_gif(path: Path, *, frames: int) -> Path:
    """A GIF of ``frames`` frames, each a different flat grey with a moving bar (one frame: a still)."""
    images = []
    for i in range(frames):
        pixels = np.full((48, 64), 40 + 10 * i, dtype=np.uint8)
        pixels[:, 4 * i : 4 * i + 8] = 250
        images.append(Image.fromarray(pixels, mode="L"))
    if frames == 1:
        images[0].save(path)
    else:
        durations = [80, 160] * (frames // 2) + [80] * (frames % 2)
        images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


def test_folder_walk_reports_what_it_leaves_out(tmp_path: Path) -> None:
    folder = tmp_path / "inbox"
    (folder / "nested").mkdir(parents=True)
    clip = make_video(folder / "clip.mp4", frames=30, size=(64, 48))
    animated = write_gif(folder / "nested" / "animated.gif", frames=6)
    damaged = truncated_copy(clip, folder / "damaged.mp4", keep=clip.stat().st_size // 2)
    write_gif(folder / "still.gif", frames=1)
    (folder / "notes.txt").write_text("a shopping list")
    write_text_as_video(folder / "renamed.mp4")
    write_unknown_codec(make_video(tmp_path / "source.mp4", frames=10, size=(64, 48)), folder / "zzzz.mov")
    explicit = tmp_path / "named.bin"
    explicit.write_bytes(clip.read_bytes())

    selection = find_videos([folder, explicit, clip])

    assert selection.videos == [p.resolve() for p in (clip, damaged, animated, explicit)]
    assert {(s.path.name, s.reason) for s in selection.skipped} == {
        ("notes.txt", SkipReason.extension),
        ("renamed.mp4", SkipReason.not_a_video),
        ("still.gif", SkipReason.not_a_video),
        ("zzzz.mov", SkipReason.unsupported),
    }
    still = next(s for s in selection.skipped if s.path.name == "still.gif")
    assert "still image" in still.detail


def test_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        find_videos([tmp_path / "nowhere"])


def test_animated_gif_samples_exactly(tmp_path: Path) -> None:
    path = write_gif(tmp_path / "bar.gif", frames=6)
    result = sample_clips(path, num_segments=4, resize=48, crop=48)
    assert result.info.codec == "gif"
    assert result.info.frame_count == 6
    assert result.info.variable_fps  # 80 ms and 160 ms delays
    # One window (0.64 s): the TSN centres of its 6 frames.
    assert result.clips[0].frame_indices == (0, 2, 3, 5)
    for frame, index in zip(result.clips[0].frames, result.clips[0].frame_indices, strict=True):
        assert abs(int(frame[24, 47, 0]) - (40 + 10 * index)) <= 3  # each frame's own grey, right of the bar
