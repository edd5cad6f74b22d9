"""The classify stage decodes the next chunk while it infers this one: read-ahead is bounded,
order kept, errors cross over, leaving early ends the decode thread; and the decode budget is not
charged for the time inference holds a chunk."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from workers.indexing.classify import prefetched
from workers.media.sampling import Clip, open_clips
from workers.media.synth import make_video


def _chunks(produced: list[int], count: int, fail_at: int | None = None) -> Iterator[list[Clip]]:
    for i in range(count):
        if i == fail_at:
            raise ValueError("damaged chunk")
        produced.append(i)
        yield [Clip(frames=np.full((1, 1, 1, 3), i, np.uint8), start_ms=i, end_ms=i + 1, frame_indices=(i,))]


def test_the_next_chunk_decodes_while_this_one_is_used_and_no_further() -> None:
    produced: list[int] = []
    seen = []
    for chunk in prefetched(_chunks(produced, 6)):
        time.sleep(0.2)  # inference: the decode thread fills the one free slot meanwhile
        # This chunk, the one waiting in the queue, and one held by the thread at its put.
        assert len(produced) <= chunk[0].start_ms + 3
        assert len(produced) >= min(chunk[0].start_ms + 2, 6)
        seen.append(chunk[0].start_ms)
    assert seen == list(range(6))


def test_a_decode_error_is_raised_in_the_consumer_and_the_thread_ends() -> None:
    threads = threading.active_count()
    seen = []
    with pytest.raises(ValueError, match="damaged chunk"):
        for chunk in prefetched(_chunks([], 5, fail_at=3)):
            seen.append(chunk[0].start_ms)
    assert seen == [0, 1, 2]
    assert threading.active_count() == threads


def test_leaving_early_stops_the_decode_thread() -> None:
    threads = threading.active_count()
    produced: list[int] = []
    for _ in prefetched(_chunks(produced, 100)):
        break
    assert threading.active_count() == threads
    assert len(produced) <= 3


def test_time_inference_holds_a_chunk_is_not_charged_to_the_decode_budget(tmp_path: Path) -> None:
    video = make_video(tmp_path / "v.mp4", frames=400, fps=16, size=(48, 32), gop=16)  # 25 s
    with open_clips(video, window_s=2.5, resize=32, crop=32, budget_s=4.0) as stream:
        chunks = 0
        for _ in prefetched(stream.chunks(1)):  # 10 chunks of one window
            time.sleep(0.6)  # 6 s held in all, past the 4 s budget
            chunks += 1
    assert chunks == 10
