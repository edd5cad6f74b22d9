"""probe(): header facts plus the truth from a packet scan."""

from __future__ import annotations

import json
from pathlib import Path

from tests.workers.media.videos import make_video, truncated_copy
from workers.media import VideoInfo, probe


def test_probe_h264_mp4(tmp_path: Path) -> None:
    path = make_video(tmp_path / "clip.mp4", frames=60, fps=30, size=(96, 64), gop=15)
    info = probe(path)
    assert info == VideoInfo(
        duration_s=2.0,
        fps=30.0,
        variable_fps=False,
        width=96,
        height=64,
        coded_width=96,
        coded_height=64,
        rotation=0,
        codec="h264",
        pix_fmt="yuv420p",
        bit_rate=info.bit_rate,
        has_audio=False,
        frame_count=60,
        declared_frame_count=60,
        keyframes=(0, 15, 30, 45),
        container="mov,mp4,m4a,3gp,3g2,mj2",
        size_bytes=path.stat().st_size,
        truncated=False,
    )
    assert info.bit_rate is not None and info.bit_rate > 0
    assert json.loads(json.dumps(info.to_dict()))["keyframes"] == [0, 15, 30, 45]


def test_probe_webm_counts_frames_the_header_does_not_declare(tmp_path: Path) -> None:
    path = make_video(tmp_path / "clip.webm", frames=45, fps=15, size=(64, 48), codec="libvpx-vp9", gop=20)
    info = probe(path)
    assert (info.codec, info.container) == ("vp9", "matroska,webm")
    assert (info.frame_count, info.declared_frame_count, info.truncated) == (45, 0, False)
    assert info.keyframes == (0, 20, 40)
    assert (info.fps, info.duration_s) == (15.0, 3.0)


def test_probe_sees_through_a_truncated_header(tmp_path: Path) -> None:
    source = make_video(
        tmp_path / "clip.mp4", frames=90, size=(64, 48), gop=30, container_options={"movflags": "faststart"}
    )
    path = truncated_copy(source, tmp_path / "cut.mp4", keep=source.stat().st_size // 2)
    info = probe(path)
    assert info.declared_frame_count == 90
    assert info.truncated
    assert 0 < info.frame_count < 90
    assert info.keyframes == tuple(k for k in (0, 30, 60) if k < info.frame_count)
