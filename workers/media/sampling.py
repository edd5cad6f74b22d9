"""TSN test-time sampling by presentation time: windows of a video, T segment centres per window."""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

import numpy as np

from workers.media.decode import Converter, VideoReader, decode_frames, make_converter
from workers.media.errors import CorruptVideoError, MediaError
from workers.media.limits import Deadline, MediaLimits
from workers.media.probe import VideoInfo, VideoSource, describe, local_path, scan

# ``exact``: the centre frame of each TSN segment. ``keyframe``: a keyframe inside the segment
# where it has one, else its centre; TSN trains on a random frame per segment, so any frame of the
# segment is in distribution, and a keyframe decodes without the frames before it.
Sampling = Literal["exact", "keyframe"]
SAMPLING_MODES: tuple[Sampling, ...] = get_args(Sampling)

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
class Shortfall:
    """Frames chosen in window number ``window`` (0-based, in plan order) that did not decode."""

    window: int
    start_s: float
    end_s: float
    missing: int


@dataclass(frozen=True)
class SampledVideo:
    """The clips of a video and how they were read.

    ``shortfalls`` lists the windows in which chosen frames did not decode (a damaged file); each
    such frame was replaced by the nearest decoded frame of its own window, and a window without
    any decoded frame has no clip. ``sampling`` is the mode actually used; ``fallback`` says why
    the file was decoded forward from its start instead of by seeking (``None`` when it was not).
    """

    info: VideoInfo
    clips: list[Clip] = field(default_factory=list)
    shortfalls: tuple[Shortfall, ...] = ()
    frames_decoded: int = 0
    seeks: int = 0
    sampling: Sampling = "exact"
    fallback: str | None = None

    @property
    def shortfall(self) -> int:
        """Chosen frames that did not decode, over all windows."""
        return sum(s.missing for s in self.shortfalls)


def segment_indices(n: int, num_segments: int) -> tuple[int, ...]:
    """TSN test-time sampling: the centre frame of each of ``num_segments`` equal segments of ``n``.

    Index ``int((i + 0.5) * n / T)``, 0-based; fewer frames than segments repeats frames.
    """
    if n <= 0 or num_segments <= 0:
        raise ValueError("need at least one frame and one segment")
    return tuple(int((i + 0.5) * n / num_segments) for i in range(num_segments))


def keyframe_indices(
    first: int, last: int, num_segments: int, keyframes: Sequence[int] | np.ndarray
) -> tuple[int, ...]:
    """Per TSN segment of frames ``[first, last)``: the keyframe inside it nearest its centre (the
    earlier on a tie), else the centre frame. Segment ``i`` holds the frames ``j - first`` with
    ``i * n / T <= j - first < (i + 1) * n / T``."""
    n = last - first
    centres = segment_indices(n, num_segments)
    chosen = []
    for i, centre in enumerate(centres):
        lo = first + math.ceil(i * n / num_segments)
        hi = first + math.ceil((i + 1) * n / num_segments)
        inside = keyframes[bisect.bisect_left(keyframes, lo) : bisect.bisect_left(keyframes, hi)]
        mid = first + centre
        chosen.append(int(min(inside, key=lambda k: (abs(k - mid), k))) if len(inside) else mid)
    return tuple(chosen)


def plan_windows(
    times_s: Sequence[float] | np.ndarray,
    end_s: float,
    *,
    num_segments: int = 8,
    window_s: float = 10.0,
    max_windows: int = 360,
    keyframes: Sequence[int] | np.ndarray | None = None,
) -> list[Window]:
    """Split a video into consecutive windows and choose each window's frames by presentation time.

    ``times_s`` are the frames' presentation times (sorted, seconds from the first frame) and
    ``end_s`` the end of the last frame. A video up to ``window_s`` long is one window; windows
    without a frame (a gap in a variable-frame-rate file) are skipped; at most ``max_windows``.
    With ``keyframes`` (sorted frame indices), each segment takes its keyframe nearest the centre
    where it has one (see :func:`keyframe_indices`).
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
        if keyframes is None:
            chosen = tuple(first + i for i in segment_indices(last - first, num_segments))
        else:
            chosen = keyframe_indices(first, last, num_segments, keyframes)
        windows.append(Window(start, stop, chosen))
        if len(windows) == max_windows:
            break
    return windows


@dataclass(frozen=True)
class SampleOptions:
    """How ``sample_clips`` and ``ClipStream`` read a video (see ``sample_clips``)."""

    num_segments: int = 8
    window_s: float = 10.0
    max_windows: int = 360
    resize: int = 256
    crop: int = 224
    limits: MediaLimits = field(default_factory=MediaLimits)
    budget_s: float | None = None
    threads: int = 1
    sampling: Sampling = "exact"
    device: str = "cpu"
    # Windows decoded per pass: frames held at once stay under group_windows x num_segments.
    group_windows: int = 16


class ClipStream:
    """The clips of a video window by window, decoded ``group_windows`` windows at a time, so that
    memory stays flat for any length and a consumer can infer while the next group decodes.

    Each group is one ``decode_frames`` pass (seeking to its first GOP), so its frames are exactly
    those of a whole-file ``sample_clips``. A file that must be decoded forward from its start (no
    trustworthy timestamps or seeks) is decoded in one pass for all windows left. Time the consumer
    holds a clip does not count against the decode budget. ``summary`` (the ``SampledVideo`` without
    clips) is set once the stream is exhausted; the corrupt-video checks run then.
    """

    def __init__(self, source: VideoSource, options: SampleOptions) -> None:
        if options.sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {SAMPLING_MODES}, not {options.sampling!r}")
        self.source, self.options = source, options
        self.summary: SampledVideo | None = None
        self.planned = 0  # windows in the plan, known once iteration has started

    def __iter__(self) -> Iterator[Clip]:
        o = self.options
        deadline = Deadline(o.limits.decode_budget_s if o.budget_s is None else o.budget_s)
        hwaccel = _hwaccel(o.device)
        with (
            local_path(self.source, limits=o.limits) as path,
            VideoReader(
                path, limits=o.limits, deadline=deadline, threads=o.threads, hwaccel=hwaccel
            ) as reader,
        ):
            result = scan(reader.container, reader.stream, deadline=deadline)
            info = describe(
                reader.container, reader.stream, result, size_bytes=path.stat().st_size, limits=o.limits
            )
            table = result.table
            used: Sampling = o.sampling if table.exact else "exact"
            windows = plan_windows(
                table.times_s(),
                table.end_s(),
                num_segments=o.num_segments,
                window_s=o.window_s,
                max_windows=o.max_windows,
                keyframes=table.keyframes if used == "keyframe" else None,
            )
            self.planned = len(windows)
            convert = _converter(o.device, resize=o.resize, crop=o.crop, rotation=info.rotation)
            shortfalls: list[Shortfall] = []
            clips = 0
            first = 0
            while first < len(windows):
                # After a forward fallback, every further pass would decode from the start again.
                last = len(windows) if reader.stats.fallback else first + o.group_windows
                group = windows[first:last]
                reader.rewind()  # the scan (or the last group) left the demuxer further on
                frames = decode_frames(
                    reader, table, sorted({i for w in group for i in w.frame_indices}), convert
                )
                group_clips, group_shortfalls = _assemble(group, frames, first_number=first)
                del frames
                shortfalls += group_shortfalls
                for clip in group_clips:
                    held = time.monotonic()
                    yield clip
                    deadline.started += time.monotonic() - held
                    clips += 1
                first += len(group)
            stats = reader.stats
        self.summary = SampledVideo(
            info=info,
            shortfalls=tuple(shortfalls),
            frames_decoded=stats.frames_decoded,
            seeks=stats.seeks,
            sampling=used,
            fallback=stats.fallback,
        )
        _check(self.summary, windows, clips, o.limits)


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
    sampling: Sampling = "exact",
    device: str = "cpu",
) -> SampledVideo:
    """Probe ``source`` and return one clip of ``num_segments`` frames per window.

    Frames: shorter side to ``resize``, centre crop
    ``crop``, display orientation, RGB uint8. ``sampling`` picks each segment's frame: its centre
    (``exact``), or a keyframe inside the segment where it has one (``keyframe``; files without
    exact timestamps sample exactly). ``budget_s`` (default ``limits.decode_budget_s``) bounds the
    whole call in wall-clock time. ``device`` "cuda[:N]" decodes with NVDEC and resizes on that GPU
    where this host can (``workers.media.gpu``), else on the CPU.
    Raises a ``MediaError`` subclass when the file yields no usable frame, or when more of the
    chosen frames fail to decode than ``limits.max_shortfall_fraction`` allows.
    """
    options = SampleOptions(
        num_segments=num_segments,
        window_s=window_s,
        max_windows=max_windows,
        resize=resize,
        crop=crop,
        limits=limits or MediaLimits(),
        budget_s=budget_s,
        threads=threads,
        sampling=sampling,
        device=device,
    )
    stream = ClipStream(source, options)
    clips = list(stream)
    assert stream.summary is not None  # set when the iteration ends
    return replace(stream.summary, clips=clips)


def _check(sampled: SampledVideo, windows: Sequence[Window], clips: int, limits: MediaLimits) -> None:
    if not clips:
        raise CorruptVideoError("no frame of the video decodes")
    planned = sum(len(w.frame_indices) for w in windows)
    if sampled.shortfall > limits.max_shortfall_fraction * planned:
        raise CorruptVideoError(
            f"{sampled.shortfall} of {planned} sampled frames did not decode "
            f"(in windows {', '.join(str(s.window) for s in sampled.shortfalls)}); "
            f"the limit is {limits.max_shortfall_fraction:.0%}"
        )


def _hwaccel(device: str) -> Any:
    if device == "cpu":
        return None
    from workers.media.gpu import hwaccel_for

    return hwaccel_for(device)


def _converter(device: str, *, resize: int, crop: int, rotation: int) -> Converter:
    """swscale on the CPU; torch on a GPU where there is one (``device`` "cuda[:N]")."""
    if device == "cpu":
        return make_converter(resize=resize, crop=crop, rotation=rotation)
    from workers.media.gpu import cuda_decode_available, make_tensor_converter

    if device.startswith("cuda") and not cuda_decode_available():
        return make_converter(resize=resize, crop=crop, rotation=rotation)
    return make_tensor_converter(resize=resize, crop=crop, rotation=rotation, device=device)


def _assemble(
    windows: Sequence[Window], frames: dict[int, np.ndarray], *, first_number: int = 0
) -> tuple[list[Clip], list[Shortfall]]:
    """One clip per window that has a decoded frame; a chosen frame that did not decode is
    replaced by the nearest decoded one of its own window and counted. Windows are numbered from
    ``first_number``."""
    clips: list[Clip] = []
    shortfalls: list[Shortfall] = []
    for number, window in enumerate(windows, first_number):
        available = [i for i in window.frame_indices if i in frames]
        missing = len(window.frame_indices) - len(available)
        if missing:
            shortfalls.append(Shortfall(number, window.start_s, window.end_s, missing))
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
    return clips, shortfalls


def _nearest(available: Sequence[int], index: int) -> int:
    """The decoded frame closest to ``index`` (the earlier one on a tie)."""
    return min(available, key=lambda a: (abs(a - index), a))


__all__ = [
    "SAMPLING_MODES",
    "Clip",
    "ClipStream",
    "MediaError",
    "SampleOptions",
    "SampledVideo",
    "Sampling",
    "Shortfall",
    "Window",
    "keyframe_indices",
    "plan_windows",
    "sample_clips",
    "segment_indices",
]
