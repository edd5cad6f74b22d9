"""Bad files fail fast with their own MediaError subclass; damaged files give what they can."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.workers.media.videos import (
    make_audio,
    make_video,
    read_index,
    truncated_copy,
    write_huge_dimensions,
    write_text_as_video,
    write_unknown_codec,
)
from workers.media import (
    CorruptVideoError,
    DecodeTimeoutError,
    MediaError,
    MediaLimits,
    NotAVideoError,
    TooLargeError,
    UnsupportedCodecError,
    probe,
    sample_clips,
)

# A hang guard, not a speed test: each of these fails in milliseconds when nothing is wrong.
HANG_GUARD_S = 5.0


def _moov_last(directory: Path) -> Path:
    return make_video(directory / "moov_last.mp4", frames=60, size=(64, 48), gop=10)


def _moov_first(directory: Path) -> Path:
    return make_video(
        directory / "moov_first.mp4",
        frames=60,
        size=(64, 48),
        gop=10,
        container_options={"movflags": "faststart"},
    )


def _zero_bytes(d: Path) -> Path:
    (d / "empty.mp4").write_bytes(b"")
    return d / "empty.mp4"


def _cut_before_moov(d: Path) -> Path:
    source = _moov_last(d)
    return truncated_copy(source, d / "cut.mp4", keep=source.read_bytes().find(b"moov") - 8)


def _cut_inside_first_frame(d: Path) -> Path:
    source = _moov_first(d)
    data = source.read_bytes()
    return truncated_copy(source, d / "cut.mp4", keep=data.find(b"mdat") + 16)


CORPUS: dict[str, tuple[Callable[[Path], Path], type[MediaError], str]] = {
    "zero bytes": (_zero_bytes, NotAVideoError, "not_a_video"),
    "text renamed .mp4": (lambda d: write_text_as_video(d / "notes.mp4"), NotAVideoError, "not_a_video"),
    "audio only": (lambda d: make_audio(d / "song.m4a"), NotAVideoError, "not_a_video"),
    "truncated, moov last": (_cut_before_moov, CorruptVideoError, "corrupt"),
    "truncated, moov first": (_cut_inside_first_frame, CorruptVideoError, "corrupt"),
    "huge declared dimensions": (lambda d: write_huge_dimensions(d / "huge.y4m"), TooLargeError, "too_large"),
    "unknown codec": (
        lambda d: write_unknown_codec(_moov_last(d), d / "zzzz.mp4"),
        UnsupportedCodecError,
        "unsupported_codec",
    ),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_bad_file_raises_its_own_error(tmp_path: Path, case: str) -> None:
    build, error, reason = CORPUS[case]
    path = build(tmp_path)
    for call in (probe, sample_clips):
        started = time.monotonic()
        with pytest.raises(error) as raised:
            call(path)
        assert type(raised.value) is error
        assert raised.value.reason == reason
        assert time.monotonic() - started < HANG_GUARD_S


def test_truncated_moov_first_gives_the_frames_it_has(tmp_path: Path) -> None:
    source = _moov_first(tmp_path)
    path = truncated_copy(source, tmp_path / "half.mp4", keep=source.stat().st_size * 6 // 10)
    info = probe(path)
    assert info.truncated
    assert info.declared_frame_count == 60
    assert 0 < info.frame_count < 60
    result = sample_clips(path, num_segments=8, resize=48, crop=48)
    clip = result.clips[0]
    assert clip.end_ms < 2000  # the window ends where the data ends, not where the header says
    assert tuple(read_index(f) for f in clip.frames) == clip.frame_indices
    assert max(clip.frame_indices) < info.frame_count


def test_limits_apply(tmp_path: Path) -> None:
    path = make_video(tmp_path / "clip.mp4", frames=60, size=(64, 48))
    with pytest.raises(TooLargeError, match="bytes"):
        probe(path, limits=MediaLimits(max_upload_bytes=1000))
    with pytest.raises(TooLargeError, match="pixels"):
        probe(path, limits=MediaLimits(max_pixels_per_frame=64 * 48 - 1))
    with pytest.raises(TooLargeError, match="longer"):
        sample_clips(path, limits=MediaLimits(max_duration_s=1.5))
    assert probe(path, limits=MediaLimits(max_duration_s=2.0, max_pixels_per_frame=64 * 48)).frame_count == 60


def test_budget_is_enforced(tmp_path: Path) -> None:
    path = make_video(tmp_path / "clip.mp4", frames=60, size=(64, 48))
    with pytest.raises(DecodeTimeoutError) as raised:
        sample_clips(path, budget_s=0.0)
    assert raised.value.reason == "timeout"
    assert len(sample_clips(path, budget_s=30.0, resize=48, crop=48).clips) == 1
