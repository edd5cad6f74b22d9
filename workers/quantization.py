"""int8 models calibrated on the user's own videos (`tsmindex model quantize`).

Calibration clips come from ``sample_clips``, the decoder the indexing pipeline uses, so the int8
graph learns the activation ranges of the frames it will actually see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model_store.tsm import ModelCard
from workers.media import MediaError, sample_clips
from workers.media.files import find_videos

DEFAULT_CALIBRATION_CLIPS = 32


@dataclass
class CalibrationSet:
    clips: list[np.ndarray] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)  # the videos the clips came from
    unusable: dict[Path, str] = field(default_factory=dict)  # video -> why it gave no clip


def calibration_clips(
    paths: list[Path], card: ModelCard, *, max_clips: int = DEFAULT_CALIBRATION_CLIPS, window_s: float = 10.0
) -> CalibrationSet:
    """Up to ``max_clips`` clips shaped for ``card``, spread evenly over the videos under ``paths``."""
    selection = find_videos(paths)
    result = CalibrationSet()
    result.unusable.update({s.path: f"{s.reason}: {s.detail}" for s in selection.skipped})
    per_video = math.ceil(max_clips / max(len(selection.videos), 1))
    for path in selection.videos:
        if len(result.clips) >= max_clips:
            break
        try:
            sampled = sample_clips(
                path,
                num_segments=card.config.num_segments,
                resize=card.preprocess.resize,
                crop=card.preprocess.crop,
                window_s=window_s,
            )
        except MediaError as exc:
            result.unusable[path] = str(exc)
            continue
        taken = [c.frames for c in sampled.clips[: min(per_video, max_clips - len(result.clips))]]
        result.clips.extend(taken)
        result.videos.append(path)
    return result
