"""The sampler returns exactly the expected source frames, upright, from every codec we support.

Every generated frame carries its index in its pixels (``workers.media.synth``), so each check
reads back which frame the sampler delivered and in which orientation.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.workers.media.videos import CODEC_EXTENSIONS, make_video, read_index, require_encoder, zero_packet
from workers.media import (
    CorruptVideoError,
    MediaLimits,
    SampledVideo,
    Shortfall,
    probe,
    sample_clips,
    segment_indices,
)
from workers.media.corpus import DERIVATIONS
from workers.media.decode import VideoReader, decode_frames, decode_sequential, make_converter
from workers.media.limits import Deadline
from workers.media.probe import scan


def _reader(path: Path) -> VideoReader:
    return VideoReader(path, limits=MediaLimits(), deadline=Deadline(30.0))


def assert_frames_match(result: SampledVideo, *, visible: float = 1.0) -> None:
    for clip in result.clips:
        assert tuple(read_index(frame, visible=visible) for frame in clip.frames) == clip.frame_indices


@pytest.mark.parametrize("codec", sorted(CODEC_EXTENSIONS))
def test_exact_frames_per_codec(tmp_path: Path, codec: str) -> None:
    require_encoder(codec)
    path = make_video(
        tmp_path / f"clip.{CODEC_EXTENSIONS[codec]}", frames=90, fps=30, size=(96, 64), codec=codec, gop=12
    )
    result = sample_clips(path, num_segments=8, window_s=1.0, resize=72, crop=64)
    assert [(c.start_ms, c.end_ms) for c in result.clips] == [(0, 1000), (1000, 2000), (2000, 3000)]
    expected = [tuple(base + i for i in segment_indices(30, 8)) for base in (0, 30, 60)]
    assert [c.frame_indices for c in result.clips] == expected
    for clip in result.clips:
        assert clip.frames.shape == (8, 64, 64, 3)
        assert clip.frames.dtype == np.uint8
    assert_frames_match(result, visible=64 / 72)
    assert result.shortfall == 0


@pytest.mark.parametrize("codec", sorted(CODEC_EXTENSIONS))
def test_targeted_decode_equals_full_decode(tmp_path: Path, codec: str) -> None:
    """Seeking and skipping non-reference frames must not change a single pixel."""
    require_encoder(codec)
    path = make_video(
        tmp_path / f"clip.{CODEC_EXTENSIONS[codec]}", frames=150, fps=30, size=(96, 64), codec=codec, gop=10
    )
    targets = [3, 4, 17, 18, 39, 61, 62, 99, 100, 101, 148, 149]
    convert = make_converter(resize=64, crop=64)
    decoded = []
    for decode in (decode_frames, decode_sequential):
        with _reader(path) as reader:
            table = scan(reader.container, reader.stream, deadline=reader.deadline).table
            reader.rewind()
            frames = decode(reader, table, targets, convert)
        assert sorted(frames) == targets
        decoded.append((frames, reader.stats))
    (ours, our_stats), (full, full_stats) = decoded
    for index in targets:
        np.testing.assert_array_equal(ours[index], full[index])
        assert read_index(ours[index]) == index
    assert full_stats.frames_decoded == 150
    assert our_stats.frames_decoded < 150


def test_seeks_only_into_later_gops(tmp_path: Path) -> None:
    path = make_video(tmp_path / "gop10.mp4", frames=300, fps=30, size=(64, 48), gop=10)
    keyframes = probe(path).keyframes
    assert keyframes == tuple(range(0, 300, 10))
    result = sample_clips(path, num_segments=8, window_s=5.0, resize=48, crop=48)
    targets = sorted({i for c in result.clips for i in c.frame_indices})
    gops = [i // 10 for i in targets]
    assert result.seeks == sum(1 for before, after in zip([0, *gops], gops, strict=False) if after > before)
    assert_frames_match(result)


def test_one_gop_never_seeks(tmp_path: Path) -> None:
    path = make_video(tmp_path / "gop300.mp4", frames=120, fps=30, size=(64, 48), gop=300)
    result = sample_clips(path, num_segments=8, window_s=1.0, resize=48, crop=48)
    assert result.seeks == 0
    assert len(result.clips) == 4
    assert_frames_match(result)


def test_variable_frame_rate_picks_frames_by_time(tmp_path: Path) -> None:
    # Bursts at 60 fps and stalls at 5 fps: frame counts per second differ wildly.
    intervals = [1 / 60] * 40 + [1 / 5] * 5 + [1 / 60] * 30 + [1 / 10] * 8
    times = np.concatenate([[0.0], np.cumsum(intervals)])[: len(intervals)]
    path = make_video(tmp_path / "vfr.mp4", frames=len(times), size=(64, 48), vfr_timestamps=times.tolist())
    info = probe(path)
    assert info.variable_fps
    assert info.frame_count == len(times)
    result = sample_clips(path, num_segments=4, window_s=1.0, resize=48, crop=48)
    expected = []
    for start in range(len(result.clips)):
        inside = [j for j, t in enumerate(times) if start <= t + 1e-6 < start + 1]
        if start == len(result.clips) - 1:
            inside = [j for j, t in enumerate(times) if t + 1e-6 >= start]
        expected.append(tuple(inside[k] for k in segment_indices(len(inside), 4)))
    assert [c.frame_indices for c in result.clips] == expected
    assert_frames_match(result)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_is_applied(tmp_path: Path, rotation: int) -> None:
    path = make_video(tmp_path / f"rot{rotation}.mp4", frames=30, size=(96, 64), rotation=rotation, gop=8)
    info = probe(path)
    assert info.rotation == rotation
    assert (info.width, info.height) == (96, 64)
    assert (info.coded_width, info.coded_height) == ((64, 96) if rotation != 180 else (96, 64))
    result = sample_clips(path, num_segments=8, resize=64, crop=64)
    assert result.clips[0].frame_indices == segment_indices(30, 8)
    assert_frames_match(result)  # the orientation markers are read where an upright frame has them


@pytest.mark.parametrize("rotation", [90, 270])
def test_legacy_rotate_tag_is_applied(tmp_path: Path, rotation: int) -> None:
    path = make_video(tmp_path / "tagged.mkv", frames=16, size=(96, 64), rotation=rotation, rotation_tag=True)
    info = probe(path)
    assert (info.rotation, info.width, info.height) == (rotation, 96, 64)
    assert_frames_match(sample_clips(path, num_segments=8, resize=64, crop=64))


def test_rotation_matches_phone_convention(tmp_path: Path) -> None:
    """A portrait phone video's track matrix (rotate tag 90 = turn clockwise) reads as -90 = 270."""
    path = make_video(tmp_path / "portrait.mp4", frames=4, size=(48, 64), rotation=-90)
    data = path.read_bytes()
    matrix_at = data.find(b"tkhd") + 4 + 4 + 5 * 4 + 8 + 4 * 2  # box, version/flags, times, reserved
    matrix = np.frombuffer(data[matrix_at : matrix_at + 16], dtype=">i4")
    assert matrix.tolist() == [0, 1 << 16, 0, -(1 << 16)]
    assert probe(path).rotation == 270


def test_fewer_frames_than_segments(tmp_path: Path) -> None:
    path = make_video(tmp_path / "three.mp4", frames=3, size=(64, 48))
    result = sample_clips(path, num_segments=8, resize=48, crop=48)
    assert result.clips[0].frame_indices == (0, 0, 0, 1, 1, 2, 2, 2)
    assert_frames_match(result)


class _Unseekable(io.RawIOBase):
    """A byte stream that can only be read forward, like an HTTP upload body."""

    def __init__(self, data: bytes) -> None:
        self._buffer = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = self._buffer.read(len(target))
        target[: len(chunk)] = chunk
        return len(chunk)


def test_unseekable_stream_with_index_at_the_end_is_spooled(tmp_path: Path) -> None:
    path = make_video(tmp_path / "moov_last.mp4", frames=40, size=(64, 48))
    data = path.read_bytes()
    assert data.find(b"moov") > data.find(b"mdat")  # the index really is at the end
    spooled_before = set(Path(tempfile.gettempdir()).glob("tsmindex-*.video"))
    result = sample_clips(_Unseekable(data), num_segments=8, resize=48, crop=48)
    assert result.clips[0].frame_indices == segment_indices(40, 8)
    assert_frames_match(result)
    assert set(Path(tempfile.gettempdir()).glob("tsmindex-*.video")) == spooled_before


def test_faststart_and_audio(tmp_path: Path) -> None:
    path = make_video(
        tmp_path / "fast.mp4",
        frames=30,
        size=(64, 48),
        audio=True,
        container_options={"movflags": "faststart"},
    )
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    info = probe(path)
    assert info.has_audio
    assert (info.frame_count, info.fps, info.duration_s) == (30, 30.0, 1.0)
    assert_frames_match(sample_clips(path, resize=48, crop=48))


@pytest.mark.parametrize("bframes", [0, 3])
def test_seek_lands_on_the_targets_keyframe(tmp_path: Path, bframes: int) -> None:
    """Reaching frame 25 of a GOP-10 file takes one seek to frame 20 and decoding 20..25 (fewer
    when non-reference B-frames are skipped); landing a GOP early would cost frames 10..25."""
    path = make_video(tmp_path / "gop10.mp4", frames=60, size=(64, 48), gop=10, bframes=bframes)
    convert = make_converter(resize=48, crop=48)
    with _reader(path) as reader:
        table = scan(reader.container, reader.stream, deadline=reader.deadline).table
        reader.rewind()
        frames = decode_frames(reader, table, [25], convert)
    stats = reader.stats
    assert stats.seeks == 1
    assert stats.frames_decoded == 6 if bframes == 0 else 2 <= stats.frames_decoded <= 6
    assert read_index(frames[25]) == 25


def test_raw_stream_without_timestamps_is_counted(tmp_path: Path) -> None:
    """A raw H.264 stream has no timestamps and cannot seek: frames are counted in decode order
    on the demuxer's nominal clock (25 fps for raw H.264)."""
    path = make_video(tmp_path / "raw.h264", frames=50, size=(64, 48), gop=10)
    info = probe(path)
    assert (info.container, info.frame_count, info.duration_s) == ("h264", 50, 2.0)
    result = sample_clips(path, num_segments=8, window_s=1.0, resize=48, crop=48)
    assert [c.frame_indices for c in result.clips] == [
        tuple(base + i for i in segment_indices(25, 8)) for base in (0, 25)
    ]
    assert_frames_match(result)


def test_damaged_frame_is_a_shortfall_of_its_window(tmp_path: Path) -> None:
    source = make_video(tmp_path / "source.mp4", frames=60, size=(96, 64))
    mjpeg = tmp_path / "clip.avi"
    DERIVATIONS["mjpeg-avi"](source, mjpeg)  # 10 fps, every frame a keyframe
    damaged = zero_packet(mjpeg, tmp_path / "damaged.avi", frame=5)

    result = sample_clips(damaged, num_segments=8, window_s=3.0, resize=64, crop=64)
    assert result.shortfalls == (Shortfall(window=0, start_s=0.0, end_s=3.0, missing=1),)
    assert result.shortfall == 1
    # Frame 5 is replaced by the nearest decoded frame of its window (1 and 9 are as near: the earlier).
    assert [c.frame_indices for c in result.clips] == [
        (1, 1, 9, 13, 16, 20, 24, 28),
        (31, 35, 39, 43, 46, 50, 54, 58),
    ]
    assert_frames_match(result)
    assert result.fallback is None  # the damage explains the frame after the seek: no need to decode forward

    with pytest.raises(CorruptVideoError, match=r"1 of 16 sampled frames did not decode \(in windows 0\)"):
        strict = MediaLimits(max_shortfall_fraction=0.05)
        sample_clips(damaged, window_s=3.0, resize=64, crop=64, limits=strict)


def test_keyframe_sampling_decodes_keyframes_inside_segments(tmp_path: Path) -> None:
    path = make_video(tmp_path / "gop10.mp4", frames=120, size=(96, 64), gop=10, bframes=2)
    exact = sample_clips(path, num_segments=8, window_s=2.0, resize=64, crop=64)
    keyframe = sample_clips(path, num_segments=8, window_s=2.0, resize=64, crop=64, sampling="keyframe")
    assert (exact.sampling, keyframe.sampling) == ("exact", "keyframe")
    assert [c.frame_indices for c in keyframe.clips] == [
        (0, 10, 20, 26, 30, 40, 50, 56),
        (60, 70, 80, 86, 90, 100, 110, 116),
    ]
    assert_frames_match(keyframe)
    assert_frames_match(exact)
    assert keyframe.frames_decoded < exact.frames_decoded


def test_keyframe_sampling_needs_timestamps(tmp_path: Path) -> None:
    path = make_video(tmp_path / "raw.h264", frames=50, size=(64, 48), gop=10)
    result = sample_clips(path, num_segments=8, resize=48, crop=48, sampling="keyframe")
    assert result.sampling == "exact"
    assert result.clips[0].frame_indices == segment_indices(50, 8)
    assert_frames_match(result)


def test_avi_with_b_frames_is_numbered_in_output_order(tmp_path: Path) -> None:
    """AVI stores no presentation times: with B-frames, frames are counted as the decoder puts them out."""
    path = make_video(tmp_path / "bframes.avi", frames=90, size=(96, 64), codec="mpeg4", gop=12, bframes=2)
    result = sample_clips(path, num_segments=8, window_s=1.0, resize=64, crop=64)
    assert [c.frame_indices for c in result.clips] == [
        tuple(base + i for i in segment_indices(30, 8)) for base in (0, 30, 60)
    ]
    assert_frames_match(result)
    assert result.seeks == 0


def test_a_seek_that_lands_late_decodes_forward(tmp_path: Path) -> None:
    """MPEG transport streams seek by bisecting the file and land past the keyframe asked for."""
    source = make_video(tmp_path / "source.mp4", frames=150, fps=25, size=(96, 64))
    path = tmp_path / "clip.ts"
    DERIVATIONS["interlaced-mpeg2-ts"](source, path)
    result = sample_clips(path, num_segments=8, window_s=2.0, resize=64, crop=64)
    assert result.fallback == "a seek went past its target"
    assert [c.frame_indices for c in result.clips] == [
        tuple(base + i for i in segment_indices(50, 8)) for base in (0, 50, 100)
    ]
    assert_frames_match(result)
