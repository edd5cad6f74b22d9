"""From the model's scores per window to the rows the index stores.

A window keeps its ``window_top_k`` labels (stored with the window, so a later query with another
threshold needs no re-decoding); the job's filters (include/exclude, ``min_score``, ``top_k``) pick
the window labels and moments search shows. Per video and label the index keeps the mean over all
windows (a label outside a window's list counts 0 there) and the peak: the best window's score and
which window it was. A label seen in a single window of a long video has a small mean but its full
peak, which is what video search ranks by by default.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Scored = tuple[str, int, float]  # (label, label index, score)


class LabelFilter(Protocol):
    """The job options that choose labels (``JobOptions`` has them)."""

    @property
    def top_k(self) -> int: ...
    @property
    def min_score(self) -> float: ...

    def keeps(self, label: str) -> bool: ...


@dataclass(frozen=True)
class ScoredWindow:
    """One window of a video and the model's top labels for it, best first."""

    index: int
    start_ms: int
    end_ms: int
    labels: list[Scored]


@dataclass(frozen=True)
class LabelStat:
    label: str
    index: int
    mean: float
    peak: float
    peak_window: int


def _rank_key(item: Scored) -> tuple[float, int]:
    return (-item[2], item[1])


def select_labels(labels: Sequence[Scored], options: LabelFilter) -> list[Scored]:
    """The labels the job keeps: allowed, at least ``min_score``, the best ``top_k``."""
    kept = [item for item in labels if options.keeps(item[0]) and item[2] >= options.min_score]
    return sorted(kept, key=_rank_key)[: options.top_k]


def aggregate(windows: Sequence[ScoredWindow]) -> list[Scored]:
    """Video-level labels: the mean over windows of each label's probability, best first.

    A window reports only its top labels; a label outside them counts as 0 for that window.
    """
    totals: dict[tuple[str, int], float] = defaultdict(float)
    for window in windows:
        for label, index, score in window.labels:
            totals[(label, index)] += score
    n = max(len(windows), 1)
    return sorted(((label, index, total / n) for (label, index), total in totals.items()), key=_rank_key)


def label_stats(windows: Sequence[ScoredWindow], options: LabelFilter) -> list[LabelStat]:
    """Mean and peak of every label the video keeps, by mean, best first: the ``top_k`` best means
    (the video's labels, as before peaks existed) and every label some window keeps."""
    means = aggregate(windows)
    chosen = {label for label, _, _ in select_labels(means, options)}
    chosen |= {label for w in windows for label, _, _ in select_labels(w.labels, options)}
    peaks: dict[str, tuple[float, int]] = {}
    for w in windows:
        for label, _, score in w.labels:
            if label in chosen and score > peaks.get(label, (-1.0, 0))[0]:
                peaks[label] = (score, w.index)
    return [LabelStat(label, index, mean, *peaks[label]) for label, index, mean in means if label in chosen]


def video_label_rows(stats: Sequence[LabelStat], key: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            **key,
            "label": s.label,
            "label_index": s.index,
            "score": s.mean,
            "peak_score": s.peak,
            "peak_window": s.peak_window,
            "rank": rank,
        }
        for rank, s in enumerate(stats, start=1)
    ]


def window_label_rows(
    windows: Sequence[ScoredWindow], options: LabelFilter, key: dict[str, Any]
) -> list[dict[str, Any]]:
    return [
        {
            **key,
            "window_index": w.index,
            "start_ms": w.start_ms,
            "end_ms": w.end_ms,
            "label": label,
            "label_index": index,
            "score": score,
            "rank": rank,
        }
        for w in windows
        for rank, (label, index, score) in enumerate(select_labels(w.labels, options), start=1)
    ]


def indexed_window_rows(
    windows: Sequence[ScoredWindow], thumbnails: dict[int, str], key: dict[str, Any]
) -> list[dict[str, Any]]:
    """One row per window: its span, its whole top list as (index, score) pairs, its thumbnail."""
    return [
        {
            **key,
            "window_index": w.index,
            "start_ms": w.start_ms,
            "end_ms": w.end_ms,
            "top_labels": [[index, round(score, 6)] for _, index, score in w.labels],
            "thumbnail_key": thumbnails.get(w.index),
        }
        for w in windows
    ]


def label_segments(window_rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of consecutive windows that each keep the same label (rows as ``window_label_rows``
    makes them): label, label_index, start_ms, end_ms, windows, score (the best window's),
    peak_window (which one) and mean_score."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(window_rows, key=lambda r: int(r["window_index"])):
        by_label.setdefault(row["label"], []).append(row)
    runs: list[list[dict[str, Any]]] = []
    for rows in by_label.values():
        runs.append([rows[0]])
        for row in rows[1:]:
            if row["window_index"] == runs[-1][-1]["window_index"] + 1:
                runs[-1].append(row)
            else:
                runs.append([row])
    segments = []
    for run in runs:
        best = max(run, key=lambda r: (r["score"], -r["window_index"]))
        segments.append(
            {
                "label": run[0]["label"],
                "label_index": run[0]["label_index"],
                "start_ms": run[0]["start_ms"],
                "end_ms": run[-1]["end_ms"],
                "windows": len(run),
                "score": best["score"],
                "peak_window": best["window_index"],
                "mean_score": sum(r["score"] for r in run) / len(run),
            }
        )
    return segments
