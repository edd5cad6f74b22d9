"""The media pipeline: probe a video, decode exactly the TSN frames, fail with a typed error.

Pure Python + PyAV + numpy (no torch), so the API and light workers can import it cheaply.
"""

from workers.media.errors import (
    CorruptVideoError,
    DecodeTimeoutError,
    MediaError,
    NotAVideoError,
    TooLargeError,
    UnsupportedCodecError,
)
from workers.media.limits import MediaLimits
from workers.media.probe import VideoInfo, VideoSource, probe, spool_to_file
from workers.media.sampling import (
    SAMPLING_MODES,
    Clip,
    ClipStream,
    Coverage,
    SampledVideo,
    Sampling,
    Shortfall,
    Window,
    open_clips,
    plan_windows,
    sample_clips,
    segment_indices,
)

__all__ = [
    "SAMPLING_MODES",
    "Clip",
    "ClipStream",
    "CorruptVideoError",
    "Coverage",
    "DecodeTimeoutError",
    "MediaError",
    "MediaLimits",
    "NotAVideoError",
    "SampledVideo",
    "Sampling",
    "Shortfall",
    "TooLargeError",
    "UnsupportedCodecError",
    "VideoInfo",
    "VideoSource",
    "Window",
    "open_clips",
    "plan_windows",
    "probe",
    "sample_clips",
    "segment_indices",
    "spool_to_file",
]
