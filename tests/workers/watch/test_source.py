"""Frames for `tsmindex watch`: a file played at its own pace, and the same video over HTTP and HLS
from a real local server."""

from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np
import pytest

from tests.model_host import ReleaseHost, release_host
from tests.platform_servers import free_port
from workers.training.motion import render_path, write_video
from workers.watch.source import SourceError, read_frames

__all__ = ["release_host"]  # fixture

FPS = 8


@pytest.fixture(scope="module")
def shot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = render_path(np.random.default_rng(4), size=32, legs=2)  # 1 + 2 legs of 13-15 frames
    video = tmp_path_factory.mktemp("shot") / "shot.mp4"
    write_video(video, path.frames, fps=FPS)
    return video


def _hls(video: Path, folder: Path) -> Path:
    """``video`` re-encoded as an HLS playlist of 1 s MPEG-TS segments."""
    folder.mkdir()
    with av.open(str(video)) as src:
        frames = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
    options = {"hls_time": "1", "hls_playlist_type": "vod"}
    with av.open(str(folder / "index.m3u8"), "w", format="hls", options=options) as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.codec_context.gop_size = FPS
        for rgb in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())
    return folder / "index.m3u8"


def test_a_file_plays_at_its_own_pace_and_every_nth_frame_is_taken(shot: Path) -> None:
    started = time.monotonic()
    frames = list(read_frames(str(shot), resize=32, crop=32))
    elapsed = time.monotonic() - started
    assert elapsed >= (len(frames) - 1) / FPS  # real time: never faster than the video
    assert [f.index for f in frames] == list(range(len(frames)))
    assert frames[-1].t_s == pytest.approx((len(frames) - 1) / FPS)
    assert frames[0].rgb.shape == (32, 32, 3) and frames[0].rgb.dtype == np.uint8

    thinned = list(read_frames(str(shot), resize=32, crop=32, speed=0, every=3, max_frames=4))
    assert [f.index for f in thinned] == [0, 3, 6, 9]
    for f in thinned:
        np.testing.assert_array_equal(f.rgb, frames[f.index].rgb)


def test_the_same_frames_come_over_http_and_hls(
    shot: Path, tmp_path: Path, release_host: ReleaseHost
) -> None:
    local = list(read_frames(str(shot), resize=32, crop=32, speed=0))
    path = release_host.publish("/live/shot.mp4", shot)
    over_http = list(read_frames(release_host.url + path, resize=32, crop=32, speed=0))
    assert len(over_http) == len(local)
    for a, b in zip(local, over_http, strict=True):
        np.testing.assert_array_equal(a.rgb, b.rgb)

    playlist = _hls(shot, tmp_path / "hls")
    for segment in playlist.parent.iterdir():
        release_host.publish(f"/hls/{segment.name}", segment)
    over_hls = list(read_frames(release_host.url + "/hls/index.m3u8", resize=32, crop=32, speed=0))
    assert len(over_hls) == len(local)
    assert over_hls[-1].t_s == pytest.approx(local[-1].t_s)
    assert len(release_host.gets) >= 4  # the mp4, the playlist and its segments


def test_sources_that_cannot_be_read_say_so(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        next(read_frames(str(tmp_path / "missing.mp4"), resize=32, crop=32))
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    with pytest.raises(SourceError, match="cannot open"):
        next(read_frames(str(not_video), resize=32, crop=32))
    with pytest.raises(SourceError, match="cannot open"):
        next(read_frames(f"http://127.0.0.1:{free_port()}/live.m3u8", resize=32, crop=32, timeout_s=2))
