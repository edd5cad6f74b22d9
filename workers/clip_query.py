"""Embedding a clip someone brings, to search the archive by example.

The clip is sampled as one window (its whole length, TSN segment centres) with the served clip
size, and embedded by the same backend that indexes videos, so its vector is comparable with the
stored window embeddings of that model version.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.core.config import Settings
from services.core.indexing.errors import InferenceError, InferenceUnavailableError
from services.core.similar import EmbedderUnavailableError, QueryClipError
from services.core.vectors import ModelKey
from workers.inference import ClipClassifier
from workers.media import MediaError, MediaLimits, sample_clips


class ClipEmbedder:
    """``services.core.similar.ClipEmbedder`` backed by a clip classifier (TorchServe or in-process)."""

    def __init__(self, settings: Settings, classifier: ClipClassifier) -> None:
        self.settings = settings
        self.classifier = classifier

    def __call__(self, path: Path) -> tuple[ModelKey, np.ndarray]:
        s = self.settings
        limits = MediaLimits(
            max_pixels_per_frame=s.max_pixels_per_frame,
            max_duration_s=s.max_duration_s,
            max_upload_bytes=s.max_upload_bytes,
            decode_budget_s=s.decode_budget_s,
        )
        try:
            sampled = sample_clips(
                path,
                num_segments=s.num_segments,
                window_s=s.max_duration_s,  # one window: the whole clip
                max_windows=1,
                resize=s.clip_resize,
                crop=s.clip_crop,
                limits=limits,
            )
        except MediaError as exc:
            raise QueryClipError(f"the clip cannot be read: {exc}") from exc
        try:
            [prediction] = self.classifier.classify([sampled.clips[0].frames], top_k=1, with_embedding=True)
        except InferenceUnavailableError as exc:
            raise EmbedderUnavailableError(f"the model server is unavailable: {exc}") from exc
        except InferenceError as exc:
            raise QueryClipError(f"the model refused the clip: {exc}") from exc
        if prediction.embedding is None:
            raise EmbedderUnavailableError("the model server answered without an embedding")
        model = ModelKey(prediction.model_name, prediction.model_version)
        return model, np.asarray(prediction.embedding, dtype=np.float32)
