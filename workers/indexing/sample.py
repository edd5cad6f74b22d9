"""Sample stage: one clip per window, in the job's sampling mode, within the media limits, as a
stream that the classify stage consumes while it decodes."""

from __future__ import annotations

from pathlib import Path

from services.core.config import Settings
from services.core.indexing.options import ResolvedOptions
from workers.media.limits import MediaLimits
from workers.media.sampling import ClipStream, SampleOptions


def limits_of(settings: Settings) -> MediaLimits:
    return MediaLimits(
        max_pixels_per_frame=settings.max_pixels_per_frame,
        max_duration_s=settings.max_duration_s,
        max_upload_bytes=settings.max_upload_bytes,
        decode_budget_s=settings.decode_budget_s,
        max_shortfall_fraction=settings.max_shortfall_fraction,
    )


def sample(path: Path, options: ResolvedOptions, settings: Settings) -> ClipStream:
    """The clips of ``path``, decoded as they are consumed. Iterating raises ``CorruptVideoError``
    at the end when more chosen frames failed to decode than the settings allow; below that, the
    frames that failed are reported in the summary's ``shortfalls``."""
    return ClipStream(
        path,
        SampleOptions(
            num_segments=settings.num_segments,
            window_s=options.window_s,
            max_windows=settings.max_windows,
            resize=settings.clip_resize,
            crop=settings.clip_crop,
            limits=limits_of(settings),
            budget_s=settings.decode_budget_s,
            sampling=options.sampling,
            device=settings.decode_device,
        ),
    )
