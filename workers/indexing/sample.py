"""Sample stage: one clip per window, in the job's sampling mode, within the media limits."""

from __future__ import annotations

from pathlib import Path

from services.core.config import Settings
from services.core.indexing.options import ResolvedOptions
from services.core.served import Preprocessing
from workers.media.limits import MediaLimits
from workers.media.sampling import SampledVideo


def limits_of(settings: Settings) -> MediaLimits:
    return MediaLimits(
        max_pixels_per_frame=settings.max_pixels_per_frame,
        max_duration_s=settings.max_duration_s,
        max_upload_bytes=settings.max_upload_bytes,
        decode_budget_s=settings.decode_budget_s,
        max_shortfall_fraction=settings.max_shortfall_fraction,
    )


def sample(
    path: Path, options: ResolvedOptions, settings: Settings, preprocessing: Preprocessing
) -> SampledVideo:
    """Raises ``CorruptVideoError`` when more chosen frames fail to decode than the settings allow;
    below that, the frames that failed are reported in ``shortfalls``."""
    from workers.media import sample_clips

    return sample_clips(
        path,
        num_segments=preprocessing.num_segments,
        window_s=options.window_s,
        max_windows=settings.max_windows,
        resize=preprocessing.clip_resize,
        crop=preprocessing.clip_crop,
        limits=limits_of(settings),
        budget_s=settings.decode_budget_s,
        sampling=options.sampling,
    )
