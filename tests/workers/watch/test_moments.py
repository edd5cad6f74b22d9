"""Moments of a running label: a new label must lead for min_frames before it opens one."""

from __future__ import annotations

import pytest

from workers.watch.moments import Moment, MomentTracker

INDEX = {"left": 1, "right": 2}


def _feed(tracker: MomentTracker, labels: list[str], scores: list[float] | None = None) -> list[Moment]:
    closed = []
    for i, label in enumerate(labels):
        score = scores[i] if scores else 0.9
        moment = tracker.update(i * 0.5, label, INDEX.get(label, 0), score)
        if moment is not None:
            closed.append(moment)
    last = tracker.close(len(labels) * 0.5)
    return [*closed, *([last] if last else [])]


def _spans(moments: list[Moment]) -> list[tuple[str, float, float, int]]:
    return [(m.label, m.start_s, m.end_s, m.frames) for m in moments]


def test_a_change_opens_a_moment_at_its_first_frame_once_it_lasts() -> None:
    moments = _feed(MomentTracker(min_frames=3), ["left"] * 4 + ["right"] * 4)
    assert _spans(moments) == [("left", 0.0, 2.0, 4), ("right", 2.0, 4.0, 4)]
    assert moments[1].label_index == 2


def test_a_flicker_shorter_than_min_frames_stays_inside_the_moment() -> None:
    labels = ["left"] * 3 + ["right"] * 2 + ["left"] * 3
    scores = [0.9, 0.8, 0.7, 0.6, 0.6, 0.5, 0.4, 0.3]
    (moment,) = _feed(MomentTracker(min_frames=3), labels, scores)
    assert (moment.label, moment.start_s, moment.end_s) == ("left", 0.0, 4.0)
    assert moment.frames == 6  # the two flicker frames are spanned, not counted
    assert moment.best_score == 0.9 and moment.mean_score == pytest.approx(
        (0.9 + 0.8 + 0.7 + 0.5 + 0.4 + 0.3) / 6
    )


def test_low_scores_lead_to_no_label_and_close_the_moment() -> None:
    labels = ["left"] * 4 + ["right"] * 3 + ["left"] * 3
    scores = [0.9] * 4 + [0.2] * 3 + [0.8] * 3
    moments = _feed(MomentTracker(min_frames=2, min_score=0.5), labels, scores)
    assert _spans(moments) == [("left", 0.0, 2.0, 4), ("left", 3.5, 5.0, 3)]


def test_a_label_that_never_lasts_makes_no_moment() -> None:
    assert _feed(MomentTracker(min_frames=3), ["left", "left", "right", "right"]) == []
    with pytest.raises(ValueError, match="min_frames"):
        MomentTracker(min_frames=0)
