"""Classify stage: each chunk of clips to window labels and clip embeddings through the inference
backend (two batches in flight), and each window's thumbnail to object storage; progress is
reported (and the lease renewed) after each chunk. Only labels, embeddings and thumbnail keys
outlive a chunk: the frames go with it.

The next chunk decodes on a thread while this one is inferred (``prefetched``): decode and
inference overlap within a job, and memory stays at two chunks whatever the video's length."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from services.core import metrics
from services.core.indexing.errors import ModelMismatchError
from services.core.thumbnails import store_thumbnail
from services.core.vectors import to_fp16
from services.core.windows import ScoredWindow
from workers.indexing.context import PipelineContext
from workers.indexing.snapshot import JobSnapshot
from workers.inference import ClipPrediction
from workers.media.sampling import Clip, ClipStream

INFER_CHUNK = 32  # clips per classify() call: enough in flight to fill two batches of 16


@dataclass
class Inferred:
    """What the model said about a video's windows."""

    windows: list[ScoredWindow] = field(default_factory=list)
    embeddings: dict[int, np.ndarray] = field(default_factory=dict)  # window index -> fp16 vector
    thumbnails: dict[int, str] = field(default_factory=dict)  # window index -> storage key


def classify(
    job: JobSnapshot, stream: ClipStream, ctx: PipelineContext, progress: Callable[[float], None]
) -> Inferred:
    inferred = Inferred()
    planned = max(len(stream.windows), 1)
    for clips in prefetched(_timed(stream.chunks(ctx.settings.clip_chunk_windows))):
        with _stage("inference"):
            predictions = _predict(job, clips, ctx)
        for clip, prediction in zip(clips, predictions, strict=True):
            _keep(job, ctx, inferred, clip, prediction)
        progress(len(inferred.windows) / planned)
    metrics.CLIPS_INFERRED.inc(len(inferred.windows))
    return inferred


def _predict(job: JobSnapshot, clips: Sequence[Clip], ctx: PipelineContext) -> list[ClipPrediction]:
    predictions: list[ClipPrediction] = []
    for start in range(0, len(clips), INFER_CHUNK):
        batch = [clip.frames for clip in clips[start : start + INFER_CHUNK]]
        chunk = ctx.classifier.classify(
            batch, top_k=ctx.settings.window_top_k, with_embedding=True, model=job.model
        )
        if chunk and chunk[0].model_version != job.model_version:
            # Labels are stored under the job's model version: they must come from that version.
            raise ModelMismatchError(
                f"job expects model version {job.model_version!r}, the backend runs "
                f"{chunk[0].model_name}:{chunk[0].model_version}"
            )
        predictions += chunk
    return predictions


def _keep(
    job: JobSnapshot, ctx: PipelineContext, inferred: Inferred, clip: Clip, pred: ClipPrediction
) -> None:
    index = len(inferred.windows)
    labels = [(p.label, p.index, p.score) for p in pred.labels]
    inferred.windows.append(ScoredWindow(index, clip.start_ms, clip.end_ms, labels))
    if pred.embedding is not None:
        inferred.embeddings[index] = to_fp16(pred.embedding)
    if ctx.settings.thumbnails:
        inferred.thumbnails[index] = store_thumbnail(
            ctx.storage, job_id=job.job_id, window_index=index, frames=clip.frames
        )


class _End:
    """The decode thread's last message."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def prefetched(chunks: Iterator[list[Clip]], depth: int = 1) -> Iterator[list[Clip]]:
    """``chunks`` read ``depth`` ahead on a thread; an error there is raised here, and leaving
    early stops the thread."""
    ready: queue.Queue[list[Clip] | _End] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: list[Clip] | _End) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
        except BaseException as exc:  # raised in the consumer's thread
            put(_End(exc))
            return
        put(_End())

    thread = threading.Thread(target=read, name="decode", daemon=True)
    thread.start()
    try:
        while not isinstance(item := ready.get(), _End):
            yield item
        if item.error is not None:
            raise item.error
    finally:
        stop.set()
        thread.join()


def _timed(chunks: Iterator[list[Clip]]) -> Iterator[list[Clip]]:
    """The chunks of a clip stream, the time spent decoding each counted as the decode stage."""
    while True:
        with _stage("decode"):
            chunk = next(chunks, None)
        if chunk is None:
            return
        yield chunk


@contextmanager
def _stage(name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        metrics.STAGE_SECONDS.labels(name).observe(time.perf_counter() - start)
