"""Label math: video labels as the mean of window probabilities, moments as runs of windows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.core.indexing.options import ResolvedOptions


@dataclass(frozen=True)
class Window:
    index: int
    start_ms: int
    end_ms: int
    labels: list[tuple[str, int, float]]  # (label, index, score), best first


def _rank_key(item: tuple[str, int, float]) -> tuple[float, int]:
    return (-item[2], item[1])


def aggregate(windows: Sequence[Window]) -> list[tuple[str, int, float]]:
    """Video-level labels: the mean over windows of each label's probability, best first.

    A window reports only its top labels; a label outside them counts as 0 for that window.
    """
    totals: dict[tuple[str, int], float] = defaultdict(float)
    for window in windows:
        for label, index, score in window.labels:
            totals[(label, index)] += score
    n = max(len(windows), 1)
    return sorted(((label, index, total / n) for (label, index), total in totals.items()), key=_rank_key)


def label_segments(window_rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of consecutive windows that each keep the same label (window rows as the store stage
    writes them): label, label_index, start_ms, end_ms, windows, score (the best window's) and
    mean_score."""
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
    return [
        {
            "label": run[0]["label"],
            "label_index": run[0]["label_index"],
            "start_ms": run[0]["start_ms"],
            "end_ms": run[-1]["end_ms"],
            "windows": len(run),
            "score": max(r["score"] for r in run),
            "mean_score": sum(r["score"] for r in run) / len(run),
        }
        for run in runs
    ]


def select_labels(
    labels: Sequence[tuple[str, int, float]], options: ResolvedOptions
) -> list[tuple[str, int, float]]:
    kept = [item for item in labels if options.keeps(item[0]) and item[2] >= options.min_score]
    return sorted(kept, key=_rank_key)[: options.top_k]
