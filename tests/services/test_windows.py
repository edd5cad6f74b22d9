"""Label math per window and per video: peaks, means, which labels a video keeps, moments."""

from __future__ import annotations

import pytest

from services.core.windows import (
    ScoredWindow,
    indexed_window_rows,
    label_segments,
    label_stats,
    window_label_rows,
)


class _Options:
    def __init__(self, top_k: int = 2, min_score: float = 0.0, exclude: tuple[str, ...] = ()) -> None:
        self.top_k, self.min_score, self.exclude = top_k, min_score, exclude

    def keeps(self, label: str) -> bool:
        return label not in self.exclude


def _hour(rare_at: int) -> list[ScoredWindow]:
    windows = [
        ScoredWindow(n, n * 10_000, (n + 1) * 10_000, [("walk", 0, 0.8), ("run", 1, 0.1)]) for n in range(360)
    ]
    windows[rare_at] = ScoredWindow(
        rare_at, rare_at * 10_000, (rare_at + 1) * 10_000, [("juggle", 2, 0.92), ("walk", 0, 0.05)]
    )
    return windows


def test_a_label_of_one_window_keeps_its_full_peak() -> None:
    stats = {s.label: s for s in label_stats(_hour(200), _Options())}
    assert (stats["juggle"].peak, stats["juggle"].peak_window) == (0.92, 200)
    assert stats["juggle"].mean == pytest.approx(0.92 / 360)
    assert stats["walk"].peak == 0.8 and stats["walk"].peak_window == 0  # the first best window
    # Ranked by mean: the video's top_k labels come first.
    assert [s.label for s in label_stats(_hour(200), _Options())] == ["walk", "run", "juggle"]


def test_only_labels_a_window_or_the_top_means_keep_get_a_row() -> None:
    windows = [ScoredWindow(0, 0, 1000, [("a", 0, 0.5), ("b", 1, 0.3), ("c", 2, 0.2)])]
    assert [s.label for s in label_stats(windows, _Options(top_k=1))] == ["a"]
    assert [s.label for s in label_stats(windows, _Options(top_k=2, exclude=("a",)))] == ["b", "c"]
    assert [s.label for s in label_stats(windows, _Options(top_k=3, min_score=0.25))] == ["a", "b"]


def test_moments_point_at_their_best_window_and_windows_keep_their_whole_list() -> None:
    windows = [
        ScoredWindow(0, 0, 1000, [("a", 0, 0.4)]),
        ScoredWindow(1, 1000, 2000, [("a", 0, 0.9)]),
        ScoredWindow(2, 2000, 3000, [("a", 0, 0.6), ("b", 1, 0.1)]),
    ]
    key = {"video_id": "v", "model_name": "tsm", "model_version": "1"}
    [moment] = [
        m for m in label_segments(window_label_rows(windows, _Options(top_k=1), key)) if m["label"] == "a"
    ]
    assert (moment["start_ms"], moment["end_ms"], moment["score"], moment["peak_window"]) == (0, 3000, 0.9, 1)
    rows = indexed_window_rows(windows, {1: "thumbnails/x/000001.jpg"}, key)
    assert rows[2]["top_labels"] == [[0, 0.6], [1, 0.1]]
    assert [r["thumbnail_key"] for r in rows] == [None, "thumbnails/x/000001.jpg", None]
