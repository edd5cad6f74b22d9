"""Classify stage: clips to window labels through the inference backend, in chunks that keep two
batches in flight; progress is reported (and the lease renewed) after each chunk."""

from __future__ import annotations

from collections.abc import Callable

from services.core import metrics
from services.core.indexing.errors import ModelMismatchError
from workers.indexing.context import PipelineContext
from workers.indexing.labels import Window
from workers.indexing.snapshot import JobSnapshot
from workers.inference import ClipPrediction
from workers.media.sampling import SampledVideo

INFER_CHUNK = 32  # clips per classify() call: enough in flight to fill two batches of 16


def classify(
    job: JobSnapshot, sampled: SampledVideo, ctx: PipelineContext, progress: Callable[[float], None]
) -> list[Window]:
    clips = [clip.frames for clip in sampled.clips]
    predictions: list[ClipPrediction] = []
    for start in range(0, len(clips), INFER_CHUNK):
        chunk = ctx.classifier.classify(
            clips[start : start + INFER_CHUNK], top_k=ctx.settings.window_top_k, model=job.model
        )
        if start == 0 and chunk and chunk[0].model_version != job.model_version:
            # Labels are stored under the job's model version: they must come from that version.
            raise ModelMismatchError(
                f"job expects model version {job.model_version!r}, the backend runs "
                f"{chunk[0].model_name}:{chunk[0].model_version}"
            )
        predictions += chunk
        progress(len(predictions) / max(len(clips), 1))
    metrics.CLIPS_INFERRED.inc(len(predictions))
    return [
        Window(i, clip.start_ms, clip.end_ms, [(p.label, p.index, p.score) for p in pred.labels])
        for i, (clip, pred) in enumerate(zip(sampled.clips, predictions, strict=True))
    ]
