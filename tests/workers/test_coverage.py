"""Whole-video coverage: a long video is indexed to its end at the default window, streamed chunk
by chunk; a configured window cap that cuts it short is recorded on the job, never silent."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from services.core.config import Settings
from services.core.models import IndexedWindow, Job
from workers.embedded import embedded_context, index_files
from workers.media import open_clips, sample_clips
from workers.media.synth import make_video
from workers.training.shipped import SHIPPED_MODEL

MINUTES = 75


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """75 minutes at 1 frame per second, 48 x 32 px: long, yet cheap to make and decode."""
    path = tmp_path_factory.mktemp("long") / "seventy-five-minutes.mp4"
    return make_video(path, frames=MINUTES * 60, fps=1.0, size=(48, 32), gop=30)


def _index(tmp_path: Path, video: Path, *, max_windows: int | None = None) -> tuple[Job, int]:
    settings = Settings(data_dir=tmp_path, thumbnails=False, max_windows=max_windows)
    ctx = embedded_context(settings, SHIPPED_MODEL)
    try:
        [result] = index_files(ctx, [video])
        assert result.status == "succeeded", result.reason
        with ctx.sessions() as session:
            job = session.get_one(Job, result.job_id)
            windows = session.scalar(
                select(func.count()).select_from(IndexedWindow).where(IndexedWindow.video_id == job.video_id)
            )
            return job, int(windows or 0)
    finally:
        ctx.close()


def test_a_75_minute_video_is_covered_to_its_end_at_the_default_window(
    tmp_path: Path, long_video: Path
) -> None:
    job, windows = _index(tmp_path, long_video)
    duration = MINUTES * 60.0
    assert windows == duration / Settings().window_s == 450
    assert job.covered_s is not None and job.covered_s >= 0.99 * duration
    assert job.truncated is False
    print(f"\n75-minute video: {windows} windows cover {job.covered_s:.0f} of {duration:.0f} s")


def test_a_lower_window_cap_marks_the_job_truncated(tmp_path: Path, long_video: Path) -> None:
    job, windows = _index(tmp_path, long_video, max_windows=100)
    assert windows == 100
    assert (job.truncated, job.covered_s) == (True, 1000.0)


def test_chunks_give_the_clips_one_pass_gives(tmp_path: Path) -> None:
    video = make_video(tmp_path / "v.mp4", frames=90, fps=10.0, size=(48, 32), gop=12)
    whole = sample_clips(video, num_segments=4, window_s=1.0, resize=32, crop=32)
    with open_clips(video, num_segments=4, window_s=1.0, resize=32, crop=32) as stream:
        chunks = list(stream.chunks(2))
        summary = stream.finish(sum(len(c) for c in chunks))
    assert [len(c) for c in chunks] == [2, 2, 2, 2, 1]
    clips = [clip for chunk in chunks for clip in chunk]
    assert [(c.start_ms, c.end_ms, c.frame_indices) for c in clips] == [
        (c.start_ms, c.end_ms, c.frame_indices) for c in whole.clips
    ]
    assert all((a.frames == b.frames).all() for a, b in zip(clips, whole.clips, strict=True))
    assert summary.coverage is not None and summary.coverage.covered_s == pytest.approx(9.0)


def test_streamed_clips_hold_one_chunk_of_frames_not_the_whole_video(long_video: Path) -> None:
    """Peak traced memory (numpy frames included) of reading the 75-minute video chunk by chunk,
    against collecting every clip at once, in one run."""
    import tracemalloc

    def streamed() -> int:
        with open_clips(long_video, num_segments=8, window_s=10.0, resize=32, crop=32) as stream:
            return sum(len(chunk) for chunk in stream.chunks(32))

    def collected() -> int:
        return len(sample_clips(long_video, num_segments=8, window_s=10.0, resize=32, crop=32).clips)

    peaks = {}
    for name, read in (("streamed", streamed), ("collected", collected)):
        tracemalloc.start()
        assert read() == 450
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    ratio = peaks["collected"] / peaks["streamed"]
    print(
        f"\npeak traced memory: streamed {peaks['streamed'] / 1e6:.1f} MB, "
        f"all clips at once {peaks['collected'] / 1e6:.1f} MB ({ratio:.1f}x)"
    )
    frames = 450 * 8 * 32 * 32 * 3  # every clip's frames, bytes
    # Holding every clip costs at least their frames; streaming saves most of that (what it keeps is
    # one chunk plus the frame table of the whole file, which costs the same either way).
    assert peaks["collected"] >= frames and peaks["streamed"] < peaks["collected"] - frames / 2
