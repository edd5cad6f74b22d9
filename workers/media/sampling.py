"""TSN test-time sampling by presentation time: windows of a video, T segment centres per window."""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from workers.media.decode import Converter, VideoReader, decode_frames, make_converter
from workers.media.errors import CorruptVideoError, MediaError
from workers.media.limits import Deadline, MediaLimits
from workers.media.probe import FrameTable, VideoInfo, VideoSource, describe, local_path, scan

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
    coverage: Coverage | None = None

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
    max_windows: int | None = None,
    keyframes: Sequence[int] | np.ndarray | None = None,
) -> list[Window]:
    """Split a video into consecutive windows and choose each window's frames by presentation time.

    ``times_s`` are the frames' presentation times (sorted, seconds from the first frame) and
    ``end_s`` the end of the last frame. A video up to ``window_s`` long is one window; windows
    without a frame (a gap in a variable-frame-rate file) are skipped; at most ``max_windows`` (None:
    all of them; :func:`coverage` says when a cap cut the video short).
    With ``keyframes`` (sorted frame indices), each segment takes its keyframe nearest the centre
    where it has one (see :func:`keyframe_indices`).
    """
    if window_s <= 0 or (max_windows is not None and max_windows <= 0):
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


def sample_clips(
    source: VideoSource,
    *,
    num_segments: int = 8,
    window_s: float = 10.0,
    max_windows: int | None = None,
    resize: int = 256,
    crop: int = 224,
    limits: MediaLimits | None = None,
    budget_s: float | None = None,
    threads: int = 1,
    sampling: Sampling = "exact",
    device: str = "cpu",
) -> SampledVideo:
    """Probe ``source`` and return one clip of ``num_segments`` frames per window, all in memory.

    Frames: shorter side to ``resize``, centre crop ``crop``, display orientation, RGB uint8.
    ``sampling`` picks each segment's frame: its centre (``exact``), or a keyframe inside the
    segment where it has one (``keyframe``; files without exact timestamps sample exactly).
    ``budget_s`` (default ``limits.decode_budget_s``) bounds the whole call in wall-clock time.
    ``device`` "cuda[:N]" decodes with NVDEC and resizes on that GPU where this host can
    (``workers.media.gpu``), else on the CPU.
    Raises a ``MediaError`` subclass when the file yields no usable frame, or when more of the
    chosen frames fail to decode than ``limits.max_shortfall_fraction`` allows. Long videos are
    better read chunk by chunk with :func:`open_clips`, whose memory does not grow with the length.
    """
    with open_clips(
        source,
        num_segments=num_segments,
        window_s=window_s,
        max_windows=max_windows,
        resize=resize,
        crop=crop,
        limits=limits,
        budget_s=budget_s,
        threads=threads,
        sampling=sampling,
        device=device,
    ) as stream:
        clips = [clip for chunk in stream.chunks() for clip in chunk]
        return stream.finish(clips)


@dataclass(frozen=True)
class Coverage:
    """How much of a video its windows span: ``truncated`` when a window cap stopped them early."""

    duration_s: float
    covered_s: float
    truncated: bool


class ClipStream:
    """The windows of one opened video, decoded ``chunk_windows`` at a time (see :func:`open_clips`).

    Only one chunk's frames are in memory at once, so a six-hour video costs what a short one does.
    Files whose frame timestamps cannot be trusted for seeking are decoded forward in one pass (one
    chunk), as before."""

    def __init__(
        self,
        reader: VideoReader,
        info: VideoInfo,
        windows: list[Window],
        *,
        table: FrameTable,
        convert: Converter,
        limits: MediaLimits,
        sampling: Sampling,
        coverage: Coverage,
    ) -> None:
        self.reader = reader
        self.info = info
        self.windows = windows
        self.sampling = sampling
        self.coverage = coverage
        self.shortfalls: list[Shortfall] = []
        self._table = table
        self._convert = convert
        self._limits = limits

    def chunks(self, chunk_windows: int = 32) -> Iterator[list[Clip]]:
        """Clips in window order, ``chunk_windows`` windows per chunk (a window whose frames all
        failed to decode has no clip)."""
        table = self._table
        seekable = bool(table.exact and len(table.keyframes))
        size = chunk_windows if seekable else max(len(self.windows), 1)
        start = 0
        while start < len(self.windows):
            if self.reader.stats.fallback is not None:
                size = len(self.windows)  # decoding forward from the start: do it once for the rest
            part = self.windows[start : start + size]
            targets = sorted({i for w in part for i in w.frame_indices})
            self.reader.rewind()
            frames = decode_frames(self.reader, table, targets, self._convert)
            clips, shortfalls = _assemble(part, frames, first=start)
            self.shortfalls += shortfalls
            start += len(part)
            held = time.monotonic()
            yield clips
            # The consumer's time (inference) is not decoding: the budget bounds decode work only.
            self.reader.deadline.started += time.monotonic() - held

    def finish(self, clips: Sequence[Clip] | int) -> SampledVideo:
        """The summary once every chunk is read (``clips``: all of them, or how many there were);
        raises ``CorruptVideoError`` when nothing or too little decoded."""
        count = clips if isinstance(clips, int) else len(clips)
        stats = self.reader.stats
        sampled = SampledVideo(
            info=self.info,
            clips=[] if isinstance(clips, int) else list(clips),
            shortfalls=tuple(self.shortfalls),
            frames_decoded=stats.frames_decoded,
            seeks=stats.seeks,
            sampling=self.sampling,
            fallback=stats.fallback,
            coverage=self.coverage,
        )
        if not count:
            raise CorruptVideoError("no frame of the video decodes")
        planned = sum(len(w.frame_indices) for w in self.windows)
        if sampled.shortfall > self._limits.max_shortfall_fraction * planned:
            raise CorruptVideoError(
                f"{sampled.shortfall} of {planned} sampled frames did not decode "
                f"(in windows {', '.join(str(s.window) for s in self.shortfalls)}); "
                f"the limit is {self._limits.max_shortfall_fraction:.0%}"
            )
        return sampled


@contextmanager
def open_clips(
    source: VideoSource,
    *,
    num_segments: int = 8,
    window_s: float = 10.0,
    max_windows: int | None = None,
    resize: int = 256,
    crop: int = 224,
    limits: MediaLimits | None = None,
    budget_s: float | None = None,
    threads: int = 1,
    sampling: Sampling = "exact",
    device: str = "cpu",
) -> Iterator[ClipStream]:
    """Probe ``source`` and plan its windows (arguments as :func:`sample_clips`); the stream decodes
    them chunk by chunk while the context is open."""
    if sampling not in SAMPLING_MODES:
        raise ValueError(f"sampling must be one of {SAMPLING_MODES}, not {sampling!r}")
    limits = limits or MediaLimits()
    deadline = Deadline(limits.decode_budget_s if budget_s is None else budget_s)
    with (
        local_path(source, limits=limits) as path,
        VideoReader(
            path, limits=limits, deadline=deadline, threads=threads, hwaccel=_hwaccel(device)
        ) as reader,
    ):
        result = scan(reader.container, reader.stream, deadline=deadline)
        info = describe(
            reader.container, reader.stream, result, size_bytes=path.stat().st_size, limits=limits
        )
        table = result.table
        used: Sampling = sampling if table.exact else "exact"
        end_s = table.end_s()
        windows = plan_windows(
            table.times_s(),
            end_s,
            num_segments=num_segments,
            window_s=window_s,
            max_windows=max_windows,
            keyframes=table.keyframes if used == "keyframe" else None,
        )
        yield ClipStream(
            reader,
            info,
            windows,
            table=table,
            convert=_converter(device, resize=resize, crop=crop, rotation=info.rotation),
            limits=limits,
            sampling=used,
            coverage=coverage(windows, end_s, max_windows=max_windows),
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


def coverage(windows: Sequence[Window], end_s: float, *, max_windows: int | None) -> Coverage:
    """Seconds of ``[0, end_s)`` inside a window; truncated when the cap stopped the plan early."""
    covered = sum(w.end_s - w.start_s for w in windows)
    cut = max_windows is not None and len(windows) == max_windows and windows[-1].end_s < end_s - 1e-6
    return Coverage(duration_s=float(end_s), covered_s=float(covered), truncated=bool(cut))


def _assemble(
    windows: Sequence[Window], frames: dict[int, np.ndarray], *, first: int = 0
) -> tuple[list[Clip], list[Shortfall]]:
    """One clip per window that has a decoded frame; a chosen frame that did not decode is
    replaced by the nearest decoded one of its own window and counted. ``first``: the plan number
    of ``windows[0]``."""
    clips: list[Clip] = []
    shortfalls: list[Shortfall] = []
    for number, window in enumerate(windows, start=first):
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
    "Coverage",
    "MediaError",
    "SampledVideo",
    "Sampling",
    "Shortfall",
    "Window",
    "coverage",
    "keyframe_indices",
    "open_clips",
    "plan_windows",
    "sample_clips",
    "segment_indices",
]
