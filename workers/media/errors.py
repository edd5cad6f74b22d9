"""Every way a file can fail to yield frames, as one exception type each under ``MediaError``.

``reason`` (a ``FailureReason``) is what jobs store as their failure reason and metrics label with.
"""

from __future__ import annotations

from services.core.indexing.errors import IndexingError
from services.core.indexing.reasons import FailureReason


class MediaError(IndexingError):
    """Base of all media failures; ``reason`` is a stable machine code."""

    reason = FailureReason.media_error


class NotAVideoError(MediaError):
    """Empty file, not a media container at all, or a container without a video stream."""

    reason = FailureReason.not_a_video


class CorruptVideoError(MediaError):
    """A video container that is damaged or truncated so badly that no frame decodes."""

    reason = FailureReason.corrupt


class UnsupportedCodecError(MediaError):
    """A video stream whose codec this build cannot decode."""

    reason = FailureReason.unsupported_codec


class TooLargeError(MediaError):
    """Beyond a configured limit: bytes, pixels per frame or duration."""

    reason = FailureReason.too_large


class DecodeTimeoutError(MediaError):
    """The file used up its wall-clock decode budget."""

    reason = FailureReason.timeout
