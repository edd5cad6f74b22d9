"""Moments of a stream: runs of frames that keep one running label, closed as the label changes.

A new label takes over only after it has led for ``min_frames`` frames in a row, and the moment it
opens starts at the first of them; a shorter flicker stays inside the moment around it. Frames whose
best score is below ``min_score`` lead to no label (and close the moment like any other change).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Moment:
    label: str
    label_index: int
    start_s: float
    end_s: float  # the time of the frame after its last one (or of its last, at the end)
    frames: int = 0
    best_score: float = 0.0
    score_sum: float = 0.0

    @property
    def mean_score(self) -> float:
        return self.score_sum / self.frames if self.frames else 0.0

    def add(self, t_s: float, score: float) -> None:
        self.frames += 1
        self.end_s = t_s
        self.best_score = max(self.best_score, score)
        self.score_sum += score


@dataclass
class _Challenger:
    label: str | None
    label_index: int
    start_s: float
    scores: list[tuple[float, float]] = field(default_factory=list)  # (t, score)


class MomentTracker:
    def __init__(self, *, min_frames: int = 3, min_score: float = 0.0) -> None:
        if min_frames < 1:
            raise ValueError("min_frames must be at least 1")
        self.min_frames = min_frames
        self.min_score = min_score
        self.current: Moment | None = None
        self._challenger: _Challenger | None = None

    def update(self, t_s: float, label: str, label_index: int, score: float) -> Moment | None:
        """Feed one frame; returns the moment this frame closed, if any."""
        leader = label if score >= self.min_score else None
        current = self.current
        if current is not None and leader == current.label:
            self._absorb_challenger(current)
            current.add(t_s, score)
            return None
        if current is None and leader is None and self._challenger is None:
            return None
        ch = self._challenger
        if ch is None or ch.label != leader:
            if ch is not None and current is not None:
                self._absorb_challenger(current)
            ch = self._challenger = _Challenger(leader, label_index, t_s)
        ch.scores.append((t_s, score))
        if len(ch.scores) < self.min_frames:
            return None
        return self._switch(ch)

    def close(self, end_s: float) -> Moment | None:
        """End of the stream: the open moment (with any trailing flicker) ends at ``end_s``."""
        current, self.current = self.current, None
        if current is None:
            return None
        if self._challenger is not None:
            self._absorb_challenger(current)
        current.end_s = max(current.end_s, end_s)
        return current

    def _switch(self, ch: _Challenger) -> Moment | None:
        closed = self.current
        if closed is not None:
            closed.end_s = ch.start_s
        self._challenger = None
        self.current = None
        if ch.label is not None:
            opened = Moment(ch.label, ch.label_index, start_s=ch.start_s, end_s=ch.start_s)
            for t, score in ch.scores:
                opened.add(t, score)
            self.current = opened
        return closed

    def _absorb_challenger(self, current: Moment) -> None:
        """A flicker that did not last: its frames count toward the moment, but not their scores."""
        ch, self._challenger = self._challenger, None
        if ch is not None:
            current.end_s = max(current.end_s, ch.scores[-1][0])
