"""Sample stage: the video's windows in the job's sampling mode, within the media limits, streamed
a chunk of clips at a time so that a long video needs no more memory than a short one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.core.config import Settings
from services.core.indexing.options import ResolvedOptions
from services.core.served import Preprocessing
from workers.media.limits import MediaLimits
from workers.media.sampling import ClipStream


def limits_of(settings: Settings) -> MediaLimits:
    return MediaLimits(
        max_pixels_per_frame=settings.max_pixels_per_frame,
        max_duration_s=settings.max_duration_s,
        max_upload_bytes=settings.max_upload_bytes,
        decode_budget_s=settings.decode_budget_s,
        max_shortfall_fraction=settings.max_shortfall_fraction,
    )


@contextmanager
def open_stream(
    path: Path, options: ResolvedOptions, settings: Settings, preprocessing: Preprocessing
) -> Iterator[ClipStream]:
    """The planned windows of ``path``, cut as the job's model wants (``preprocessing``, its registry
    row); ``ClipStream.finish`` raises ``CorruptVideoError`` when more chosen frames failed to decode
    than the settings allow (below that they are in ``shortfalls``)."""
    from workers.media import open_clips

    with open_clips(
        path,
        num_segments=preprocessing.num_segments,
        window_s=options.window_s,
        max_windows=settings.max_windows,
        resize=preprocessing.clip_resize,
        crop=preprocessing.clip_crop,
        limits=limits_of(settings),
        budget_s=settings.decode_budget_s,
        sampling=options.sampling,
        device=settings.decode_device,
    ) as stream:
        yield stream
