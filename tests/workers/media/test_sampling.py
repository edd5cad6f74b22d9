"""Window planning and TSN segment centres, on timestamps alone."""

from __future__ import annotations

import numpy as np
import pytest

from workers.media import Window, plan_windows, segment_indices
from workers.media.sampling import keyframe_indices


def test_segment_centres_follow_tsn() -> None:
    assert segment_indices(30, 8) == (1, 5, 9, 13, 16, 20, 24, 28)
    assert segment_indices(8, 8) == (0, 1, 2, 3, 4, 5, 6, 7)
    assert segment_indices(300, 8) == (18, 56, 93, 131, 168, 206, 243, 281)


def test_fewer_frames_than_segments_repeat() -> None:
    assert segment_indices(3, 8) == (0, 0, 0, 1, 1, 2, 2, 2)
    assert segment_indices(1, 8) == (0,) * 8


def test_segment_indices_rejects_empty() -> None:
    with pytest.raises(ValueError):
        segment_indices(0, 8)


def test_short_video_is_one_window() -> None:
    times = np.arange(75) / 30.0
    assert plan_windows(times, 2.5, num_segments=8, window_s=10.0) == [
        Window(0.0, 2.5, (4, 14, 23, 32, 42, 51, 60, 70))
    ]


def test_consecutive_windows_with_a_tail() -> None:
    # 2.5 s at 30 fps in 1 s windows: [0,1) [1,2) [2,2.5) -- the 0.5 s tail is half a window, kept.
    times = np.arange(75) / 30.0
    windows = plan_windows(times, 2.5, num_segments=8, window_s=1.0)
    assert [(w.start_s, w.end_s) for w in windows] == [(0.0, 1.0), (1.0, 2.0), (2.0, 2.5)]
    assert windows[0].frame_indices == (1, 5, 9, 13, 16, 20, 24, 28)
    assert windows[1].frame_indices == tuple(30 + i for i in (1, 5, 9, 13, 16, 20, 24, 28))
    assert windows[2].frame_indices == tuple(60 + i for i in (0, 2, 4, 6, 8, 10, 12, 14))


def test_short_tail_joins_the_previous_window() -> None:
    times = np.arange(66) / 30.0  # 2.2 s
    windows = plan_windows(times, 2.2, num_segments=4, window_s=1.0)
    assert [(w.start_s, w.end_s) for w in windows] == [(0.0, 1.0), (1.0, 2.2)]
    assert windows[1].frame_indices == tuple(30 + int((i + 0.5) * 36 / 4) for i in range(4))


def test_window_cap() -> None:
    times = np.arange(300) / 30.0
    windows = plan_windows(times, 10.0, num_segments=2, window_s=1.0, max_windows=3)
    assert [w.start_s for w in windows] == [0.0, 1.0, 2.0]
    assert windows[2].frame_indices == (67, 82)


def test_variable_frame_rate_counts_frames_by_time() -> None:
    # 50 frames in the first second, 5 in the second: the windows hold different frame counts.
    times = np.concatenate([np.arange(50) / 50.0, 1.0 + np.arange(5) / 5.0])
    windows = plan_windows(times, 2.0, num_segments=4, window_s=1.0)
    assert windows == [
        Window(0.0, 1.0, (6, 18, 31, 43)),
        Window(1.0, 2.0, (50, 51, 53, 54)),
    ]


def test_windows_without_frames_are_skipped() -> None:
    times = np.array([0.0, 0.5, 3.2, 3.4])
    windows = plan_windows(times, 3.6, num_segments=2, window_s=1.0)
    assert windows == [Window(0.0, 1.0, (0, 1)), Window(3.0, 3.6, (2, 3))]


def test_no_frames_no_windows() -> None:
    assert plan_windows([], 0.0) == []


def test_keyframe_plan_takes_the_keyframe_nearest_each_centre() -> None:
    # 30 frames, 8 segments of 3.75 frames: [0,4) [4,8) [8,12) [12,15) [15,19) [19,23) [23,27) [27,30).
    assert keyframe_indices(0, 30, 8, [0, 6, 7, 13, 25]) == (0, 6, 9, 13, 16, 20, 25, 28)
    assert keyframe_indices(0, 30, 8, []) == segment_indices(30, 8)
    # Equally near the centre 5 (segment [4, 8)): the earlier keyframe.
    assert keyframe_indices(0, 30, 8, [4, 6]) == (1, 4, 9, 13, 16, 20, 24, 28)
    # Offsets: a window that starts at frame 100 uses its own segments.
    assert keyframe_indices(100, 130, 8, [96, 130]) == tuple(100 + i for i in segment_indices(30, 8))


def test_keyframe_plan_per_window() -> None:
    times = np.arange(120) / 30.0
    windows = plan_windows(times, 4.0, num_segments=8, window_s=2.0, keyframes=np.arange(0, 120, 10))
    assert [w.frame_indices for w in windows] == [
        (0, 10, 20, 26, 30, 40, 50, 56),
        (60, 70, 80, 86, 90, 100, 110, 116),
    ]
