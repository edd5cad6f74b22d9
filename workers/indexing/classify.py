"""Classify stage: clips to window labels through the inference backend while the video decodes.

A decode thread reads the ``ClipStream`` into a bounded queue (``CLIP_QUEUE`` clips), so decoding
and inference overlap and a job holds at most the queue plus one chunk in memory, whatever the
video's length. Chunks of ``INFER_CHUNK`` clips go to the backend, which keeps them in flight so that
TorchServe's batches fill; progress is reported (and the lease renewed) after each chunk.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from services.core import metrics
from services.core.indexing.errors import ModelMismatchError
from workers.indexing.context import PipelineContext
from workers.indexing.labels import Window
from workers.indexing.snapshot import JobSnapshot
from workers.inference import ClipPrediction
from workers.media.sampling import Clip, ClipStream, SampledVideo

INFER_CHUNK = 32  # clips per classify() call: enough in flight to fill two batches of 16
CLIP_QUEUE = 2 * INFER_CHUNK  # decoded clips waiting for inference (about 77 MB at 8x224x224)


@dataclass
class _End:
    """The decode thread's last message: the stream's summary, or why it stopped."""

    summary: SampledVideo | None
    error: BaseException | None
    decode_s: float


class _Decoder:
    """Runs a ``ClipStream`` on a thread into a bounded queue; ``stop`` ends it early."""

    def __init__(self, stream: ClipStream) -> None:
        self.stream = stream
        self.queue: queue.Queue[Clip | _End] = queue.Queue(maxsize=CLIP_QUEUE)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="decode", daemon=True)
        self.end = _End(None, None, 0.0)  # replaced by the decode thread's last message

    def _run(self) -> None:
        busy, error = 0.0, None
        try:
            started = time.perf_counter()
            for clip in self.stream:
                busy += time.perf_counter() - started
                if not self._put(clip):
                    return
                started = time.perf_counter()
            busy += time.perf_counter() - started
        except BaseException as exc:  # handed to the consumer, which raises it in the job's thread
            error = exc
        self._put(_End(self.stream.summary, error, busy))

    def _put(self, item: Clip | _End) -> bool:
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def clips(self, min_chunk: int) -> Iterator[list[Clip]]:
        """Chunks of up to ``INFER_CHUNK`` clips as they decode, sent early once ``min_chunk`` (a
        full batch) are there and no more are waiting; raises what the decoder raised."""
        self.thread.start()
        chunk: list[Clip] = []
        while True:
            item = self.queue.get()
            if isinstance(item, _End):
                if chunk:
                    yield chunk
                self.end = item
                if item.error is not None:
                    raise item.error
                return
            chunk.append(item)
            if len(chunk) == INFER_CHUNK or (self.queue.empty() and len(chunk) >= min_chunk):
                yield chunk
                chunk = []

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()


def classify(
    job: JobSnapshot, stream: ClipStream, ctx: PipelineContext, progress: Callable[[float], None]
) -> tuple[list[Window], SampledVideo]:
    """The windows' labels and the stream's summary; decode and inference overlap."""
    decoder = _Decoder(stream)
    windows: list[Window] = []
    infer_s = 0.0
    try:
        for chunk in decoder.clips(_batch_size(ctx)):
            started = time.perf_counter()
            predictions = ctx.classifier.classify([c.frames for c in chunk], top_k=ctx.settings.window_top_k)
            infer_s += time.perf_counter() - started
            if not windows and predictions:
                _check_version(job, predictions[0])
            windows += [
                Window(
                    len(windows) + i,
                    clip.start_ms,
                    clip.end_ms,
                    [(p.label, p.index, p.score) for p in pred.labels],
                )
                for i, (clip, pred) in enumerate(zip(chunk, predictions, strict=True))
            ]
            progress(len(windows) / max(stream.planned, len(windows), 1))
    finally:
        decoder.close()
    summary = decoder.end.summary
    assert summary is not None  # a stream that ended without error has its summary
    metrics.STAGE_SECONDS.labels("decode").observe(decoder.end.decode_s)
    metrics.STAGE_SECONDS.labels("inference").observe(infer_s)
    metrics.CLIPS_INFERRED.inc(len(windows))
    return windows, summary


def _batch_size(ctx: PipelineContext) -> int:
    """The backend's batch: smaller chunks would run part-filled batches, which cost more per clip."""
    size = getattr(ctx.classifier, "batch_size", None) or ctx.settings.inference_batch_size
    return min(int(size or INFER_CHUNK // 2), INFER_CHUNK)


def _check_version(job: JobSnapshot, first: ClipPrediction) -> None:
    if first.model_version != job.model_version:
        # Labels are stored under the job's model version: they must come from that version.
        raise ModelMismatchError(
            f"job expects model version {job.model_version!r}, the backend runs "
            f"{first.model_name}:{first.model_version}"
        )
