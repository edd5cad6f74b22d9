"""The classify stage streams: decoding runs ahead of inference by at most the clip queue, labels
come out in window order and equal a whole-file run's, and errors on either side end both."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.core.config import Settings
from services.core.indexing.options import IndexOptions
from workers.indexing.classify import CLIP_QUEUE, INFER_CHUNK, classify
from workers.indexing.context import PipelineContext, build_context
from workers.indexing.snapshot import JobSnapshot
from workers.inference import ClipPrediction, InProcessEngine
from workers.media.errors import MediaError
from workers.media.sampling import Clip, ClipStream, SampleOptions, sample_clips
from workers.media.synth import make_video
from workers.training.shipped import SHIPPED_MODEL

WINDOW_S = 0.5  # 8 frames at 16 fps: many windows from a short file


class CountingStream(ClipStream):
    """A ClipStream that counts the clips it has decoded so far."""

    decoded = 0

    def __iter__(self) -> Iterator[Clip]:
        for clip in super().__iter__():
            self.decoded += 1
            yield clip


class Recorder:
    """The in-process engine, noting how far decoding had run ahead at each call."""

    def __init__(self, stream: CountingStream, fail_at: int | None = None) -> None:
        self.engine = InProcessEngine.from_checkpoint(SHIPPED_MODEL, device="cpu", precision="fp32")
        self.stream, self.fail_at = stream, fail_at
        self.inferred = 0
        self.ahead: list[int] = []

    def classify(
        self, clips: Sequence[np.ndarray], *, top_k: int = 5, with_embedding: bool = False
    ) -> list[ClipPrediction]:
        self.ahead.append(self.stream.decoded - self.inferred)
        if self.fail_at is not None and self.inferred >= self.fail_at:
            raise RuntimeError("inference went away")
        self.inferred += len(clips)
        return self.engine.classify(clips, top_k=top_k)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 200 windows of 0.5 s: more than the queue and a chunk together.
    return make_video(
        tmp_path_factory.mktemp("long") / "long.mp4", frames=1600, fps=16, size=(48, 32), gop=16
    )


def _job(engine: InProcessEngine, settings: Settings) -> JobSnapshot:
    card = engine.model.card
    return JobSnapshot(
        job_id=uuid.uuid4(),
        video_id=uuid.uuid4(),
        owner="test",
        model_name=card.name,
        model_version=card.version,
        options=IndexOptions().resolve(settings),
        storage_key=None,
        source_uri=None,
        sha256=None,
        created_at=datetime.now(UTC),
    )


def _run(video: Path, tmp_path: Path, fail_at: int | None = None) -> tuple[Any, Recorder, CountingStream]:
    settings = Settings(_env_file=None, data_dir=tmp_path, window_top_k=1)  # type: ignore[call-arg]
    stream = CountingStream(video, SampleOptions(window_s=WINDOW_S, max_windows=1000, resize=32, crop=32))
    recorder = Recorder(stream, fail_at)
    ctx: PipelineContext = build_context(settings, classifier=recorder)
    try:
        return classify(_job(recorder.engine, settings), stream, ctx, lambda _: None), recorder, stream
    finally:
        ctx.close()


def test_decoding_runs_ahead_by_at_most_the_queue_and_labels_match_a_whole_file_run(
    long_video: Path, tmp_path: Path
) -> None:
    (windows, summary), recorder, _ = _run(long_video, tmp_path)
    assert len(windows) == 200 and [w.index for w in windows] == list(range(200))
    assert recorder.inferred == 200 and len(recorder.ahead) >= 200 // INFER_CHUNK
    # In the queue, in the chunk being built, and one clip held by the decode thread.
    assert max(recorder.ahead) <= CLIP_QUEUE + INFER_CHUNK + 1
    whole = sample_clips(long_video, window_s=WINDOW_S, max_windows=1000, resize=32, crop=32)
    want = recorder.engine.classify([c.frames for c in whole.clips], top_k=1)
    assert [w.labels[0][1] for w in windows] == [p.labels[0].index for p in want]
    assert [(w.start_ms, w.end_ms) for w in windows] == [(c.start_ms, c.end_ms) for c in whole.clips]
    assert summary.shortfalls == whole.shortfalls and summary.clips == []


def test_an_inference_failure_stops_the_decoder(long_video: Path, tmp_path: Path) -> None:
    threads = threading.active_count()
    with pytest.raises(RuntimeError, match="inference went away"):
        _run(long_video, tmp_path, fail_at=INFER_CHUNK)
    assert threading.active_count() == threads  # the decode thread has ended


def test_a_video_that_does_not_decode_fails_the_stage_and_ends_the_decoder(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    good = make_video(tmp_path / "good.mp4", frames=32, fps=16, size=(48, 32))
    data = bytearray(good.read_bytes())
    data[len(data) // 4 :] = bytes(len(data) - len(data) // 4)  # every frame's payload zeroed
    bad.write_bytes(bytes(data))
    threads = threading.active_count()
    with pytest.raises(MediaError):
        _run(bad, tmp_path)
    assert threading.active_count() == threads


def test_grouped_decoding_gives_the_whole_file_frames(long_video: Path) -> None:
    options = SampleOptions(window_s=WINDOW_S, max_windows=1000, resize=32, crop=32, group_windows=3)
    streamed = list(ClipStream(long_video, options))
    whole = sample_clips(long_video, window_s=WINDOW_S, max_windows=1000, resize=32, crop=32)
    assert len(streamed) == len(whole.clips) == 200
    for a, b in zip(streamed, whole.clips, strict=True):
        assert a.frame_indices == b.frame_indices
        np.testing.assert_array_equal(a.frames, b.frames)


def test_time_a_consumer_holds_a_clip_does_not_spend_the_decode_budget(long_video: Path) -> None:
    import time

    options = SampleOptions(window_s=4.0, max_windows=1000, resize=32, crop=32, budget_s=5.0, group_windows=1)
    count = 0
    for _ in ClipStream(long_video, options):  # 25 windows
        time.sleep(0.3)  # 7.5 s held in all, past the 5 s budget
        count += 1
    assert count == 25
