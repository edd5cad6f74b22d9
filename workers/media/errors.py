"""Every way a file can fail to yield frames, as one exception type each under ``MediaError``.

``reason`` is a short machine code that jobs store as their failure reason and metrics label with.
"""

from __future__ import annotations


class MediaError(Exception):
    """Base of all media failures; ``reason`` is a stable machine code."""

    reason: str = "media_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotAVideoError(MediaError):
    """Empty file, not a media container at all, or a container without a video stream."""

    reason = "not_a_video"


class CorruptVideoError(MediaError):
    """A video container that is damaged or truncated so badly that no frame decodes."""

    reason = "corrupt"


class UnsupportedCodecError(MediaError):
    """A video stream whose codec this build cannot decode."""

    reason = "unsupported_codec"


class TooLargeError(MediaError):
    """Beyond a configured limit: bytes, pixels per frame or duration."""

    reason = "too_large"


class DecodeTimeoutError(MediaError):
    """The file used up its wall-clock decode budget."""

    reason = "timeout"
