"""TSN test-time sampling by presentation time: windows of a video, T segment centres per window."""

from __future__ import annotations

import bisect
import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import av.error
import numpy as np

from workers.media.decode import decode_frames, decode_sequential, make_converter
from workers.media.errors import CorruptVideoError, MediaError
from workers.media.limits import Deadline, MediaLimits
from workers.media.probe import VideoInfo, VideoSource, describe, local_path, open_video, scan

# A tail shorter than this part of a window joins the window before it instead of becoming a
# clip of its own (a 10.3 s video gives one 10.3 s clip, not a 10 s one and a 0.3 s one).
TAIL_MERGE_FRACTION = 0.5


@dataclass(frozen=True)
class Window:
    """A span [start_s, end_s) of the video and the source frame index chosen for each segment."""

    start_s: float
    end_s: float
    frame_indices: tuple[int, ...]


@dataclass(frozen=True)
class Clip:
    """One window's frames, ready for the model: uint8 ``[T, crop, crop, 3]`` RGB."""

    frames: np.ndarray
    start_ms: int
    end_ms: int
    frame_indices: tuple[int, ...]


@dataclass(frozen=True)
class SampledVideo:
    """The clips of a video. ``shortfall`` counts chosen frames that did not decode (damaged file);
    each was replaced by the nearest decoded frame of its own clip."""

    info: VideoInfo
    clips: list[Clip] = field(default_factory=list)
    shortfall: int = 0
    frames_decoded: int = 0
    seeks: int = 0


def segment_indices(n: int, num_segments: int) -> tuple[int, ...]:
    """TSN test-time sampling: the centre frame of each of ``num_segments`` equal segments of ``n``.

    Index ``int((i + 0.5) * n / T)``, 0-based; fewer frames than segments repeats frames.
    """
    if n <= 0 or num_segments <= 0:
        raise ValueError("need at least one frame and one segment")
    return tuple(int((i + 0.5) * n / num_segments) for i in range(num_segments))


def plan_windows(
    times_s: Sequence[float] | np.ndarray,
    end_s: float,
    *,
    num_segments: int = 8,
    window_s: float = 10.0,
    max_windows: int = 360,
) -> list[Window]:
    """Split a video into consecutive windows and choose each window's frames by presentation time.

    ``times_s`` are the frames' presentation times (sorted, seconds from the first frame) and
    ``end_s`` the end of the last frame. A video up to ``window_s`` long is one window; windows
    without a frame (a gap in a variable-frame-rate file) are skipped; at most ``max_windows``.
    """
    if window_s <= 0 or max_windows <= 0:
        raise ValueError("window_s and max_windows must be positive")
    times = [float(t) for t in times_s]
    if not times:
        return []
    count = max(1, math.ceil(end_s / window_s - 1e-9))
    if count > 1 and end_s - (count - 1) * window_s < TAIL_MERGE_FRACTION * window_s:
        count -= 1
    windows: list[Window] = []
    for k in range(count):
        start = k * window_s
        stop = end_s if k == count - 1 else (k + 1) * window_s
        first, last = bisect.bisect_left(times, start - 1e-9), bisect.bisect_left(times, stop - 1e-9)
        if k == count - 1:
            last = len(times)
        if last <= first:
            continue
        local = segment_indices(last - first, num_segments)
        windows.append(Window(start, stop, tuple(first + i for i in local)))
        if len(windows) == max_windows:
            break
    return windows


def sample_clips(
    source: VideoSource,
    *,
    num_segments: int = 8,
    window_s: float = 10.0,
    max_windows: int = 360,
    resize: int = 256,
    crop: int = 224,
    limits: MediaLimits | None = None,
    budget_s: float | None = None,
    threads: int = 1,
) -> SampledVideo:
    """Probe ``source`` and return one clip of ``num_segments`` frames per window.

    Frames: shorter side to ``resize``, centre crop ``crop``, display orientation, RGB uint8.
    ``budget_s`` (default ``limits.decode_budget_s``) bounds the whole call in wall-clock time.
    Raises a ``MediaError`` subclass when the file yields no usable frame.
    """
    limits = limits or MediaLimits()
    deadline = Deadline(limits.decode_budget_s if budget_s is None else budget_s)
    with local_path(source, limits=limits) as path, contextlib.ExitStack() as stack:
        container, stream = stack.enter_context(
            open_video(path, limits=limits, deadline=deadline, threads=threads)
        )
        result = scan(container, stream, deadline=deadline)
        info = describe(container, stream, result, size_bytes=path.stat().st_size, limits=limits)
        table = result.table
        windows = plan_windows(
            table.times_s(),
            table.end_s(),
            num_segments=num_segments,
            window_s=window_s,
            max_windows=max_windows,
        )
        targets = sorted({i for w in windows for i in w.frame_indices})
        convert = make_converter(resize=resize, crop=crop, rotation=info.rotation)
        # The scan left the demuxer at the end of the file: go back to the first keyframe, or
        # reopen the file where the format cannot seek (raw elementary streams).
        try:
            container.seek(
                table.keyframe_pts(0) if table.exact and len(table.keyframes) else 0,
                stream=stream if table.exact and len(table.keyframes) else None,
                backward=True,
                any_frame=False,
            )
            stream.codec_context.flush_buffers()
        except av.error.FFmpegError:
            stack.close()
            container, stream = stack.enter_context(
                open_video(path, limits=limits, deadline=deadline, threads=threads)
            )
        if table.exact and len(table.keyframes):
            frames, stats = decode_frames(container, stream, table, targets, convert, deadline=deadline)
        else:
            frames, stats = decode_sequential(container, stream, table, targets, convert, deadline=deadline)

    clips: list[Clip] = []
    shortfall = 0
    for window in windows:
        available = [i for i in window.frame_indices if i in frames]
        shortfall += len(window.frame_indices) - len(available)
        if not available:
            continue
        chosen = tuple(_nearest(available, i) for i in window.frame_indices)
        clips.append(
            Clip(
                frames=np.stack([frames[i] for i in chosen]),  # [T, crop, crop, 3]
                start_ms=round(window.start_s * 1000),
                end_ms=round(window.end_s * 1000),
                frame_indices=chosen,
            )
        )
    if not clips:
        raise CorruptVideoError("no frame of the video decodes")
    return SampledVideo(
        info=info, clips=clips, shortfall=shortfall, frames_decoded=stats.frames_decoded, seeks=stats.seeks
    )


def _nearest(available: Sequence[int], index: int) -> int:
    """The decoded frame closest to ``index`` (the earlier one on a tie)."""
    return min(available, key=lambda a: (abs(a - index), a))


__all__ = ["Clip", "MediaError", "SampledVideo", "Window", "plan_windows", "sample_clips", "segment_indices"]
