"""Which files of a folder get indexed, and why the others do not.

Files named on the command line are always taken (a bad one fails its own job with a reason). In a
folder, a file is taken when its name ends like a video and its content opens as one; every other
file is reported with the reason it was left out, never dropped without a word.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import av
import av.error

from workers.media.errors import CorruptVideoError, MediaError, NotAVideoError, UnsupportedCodecError
from workers.media.limits import Deadline, MediaLimits
from workers.media.probe import open_video

VIDEO_SUFFIXES = frozenset(
    {
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".webm",
        ".avi",
        ".mpg",
        ".mpeg",
        ".m2v",
        ".mpv",
        ".ts",
        ".m2ts",
        ".mts",
        ".vob",
        ".flv",
        ".wmv",
        ".asf",
        ".3gp",
        ".ogv",
        ".gif",
    }
)
# Opening a file to look at it must not take long, whatever the file is.
SNIFF_BUDGET_S = 10.0


class SkipReason(StrEnum):
    """Why a file in a folder is not indexed."""

    extension = "extension"  # its name does not end like a video
    not_a_video = "not_a_video"  # it does, but its content is not a video (or is a still image)
    unsupported = "unsupported"  # a video whose codec this build cannot decode


@dataclass(frozen=True)
class SkippedFile:
    path: Path
    reason: SkipReason
    detail: str


@dataclass
class FileSelection:
    """The files to index, in order, and the files left out with their reasons."""

    videos: list[Path] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)


def find_videos(paths: Iterable[Path], *, limits: MediaLimits | None = None) -> FileSelection:
    """Files as given, and the videos under each folder (recursively, sorted), without repeats.

    Raises ``FileNotFoundError`` for a path that does not exist.
    """
    limits = limits or MediaLimits()
    selection = FileSelection()
    seen: set[Path] = set()
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.resolve() not in seen:
                    seen.add(child.resolve())
                    _sort_out(child, selection, limits)
        elif path.is_file():
            if path.resolve() not in seen:
                seen.add(path.resolve())
                selection.videos.append(path.resolve())
        else:
            raise FileNotFoundError(path)
    return selection


def _sort_out(path: Path, selection: FileSelection, limits: MediaLimits) -> None:
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        selection.skipped.append(SkippedFile(path, SkipReason.extension, path.suffix or "no extension"))
        return
    reason = sniff(path, limits=limits)
    if reason is None:
        selection.videos.append(path.resolve())
    else:
        selection.skipped.append(SkippedFile(path, *reason))


def sniff(path: Path, *, limits: MediaLimits) -> tuple[SkipReason, str] | None:
    """``None`` when ``path`` opens as a video with a decoder here (a damaged one included: its
    job then fails with the reason), else why not."""
    try:
        with open_video(path, limits=limits, deadline=Deadline(SNIFF_BUDGET_S)) as (container, stream):
            if stream.codec_context.name == "gif" and not _has_second_frame(container, stream):
                return SkipReason.not_a_video, "a still image (a GIF of one frame)"
    except NotAVideoError as exc:
        return SkipReason.not_a_video, exc.message
    except UnsupportedCodecError as exc:
        return SkipReason.unsupported, exc.message
    except CorruptVideoError:
        return None
    except MediaError:
        return None  # too large or too slow to open: the job says so
    return None


def _has_second_frame(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> bool:
    try:
        packets = (p for p in container.demux(stream) if p.size)
        return next(packets, None) is not None and next(packets, None) is not None
    except av.error.FFmpegError:
        return True  # let the job decide


__all__ = ["VIDEO_SUFFIXES", "FileSelection", "SkipReason", "SkippedFile", "find_videos", "sniff"]
