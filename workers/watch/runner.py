"""The watch loop: frames in, a running label per frame, moments as they close, latency figures."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from workers.watch.moments import Moment, MomentTracker
from workers.watch.online import FrameLabel, OnlineClassifier
from workers.watch.source import SourceFrame


@dataclass
class WatchStats:
    frames: int = 0
    last_t_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    moments: int = 0

    def latency_ms(self, q: float) -> float:
        """The ``q`` quantile (0..1) of per-frame latency in milliseconds."""
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    @property
    def mean_latency_ms(self) -> float:
        return 1000 * statistics.fmean(self.latencies_s) if self.latencies_s else float("nan")


def run_watch(
    frames: Iterable[SourceFrame],
    classifier: OnlineClassifier,
    tracker: MomentTracker,
    *,
    on_frame: Callable[[SourceFrame, FrameLabel, WatchStats], None] | None = None,
    on_moment: Callable[[Moment], None] | None = None,
) -> WatchStats:
    """Classify every frame, report it, and hand each moment over as it closes (and the last at the
    end, which is the frame interval after the last frame)."""
    stats = WatchStats()
    interval = 0.0
    for frame in frames:
        result = classifier.step(frame.rgb)
        if stats.frames:
            interval = frame.t_s - stats.last_t_s
        stats.frames += 1
        stats.last_t_s = frame.t_s
        stats.latencies_s.append(result.latency_s)
        if on_frame is not None:
            on_frame(frame, result, stats)
        closed = tracker.update(frame.t_s, result.label, result.index, result.score)
        if closed is not None:
            stats.moments += 1
            if on_moment is not None:
                on_moment(closed)
    last = tracker.close(stats.last_t_s + interval)
    if last is not None:
        stats.moments += 1
        if on_moment is not None:
            on_moment(last)
    return stats
