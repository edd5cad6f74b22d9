"""Open a video safely and describe it from a full packet scan (headers lie about truncated files)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import av
import av.container
import av.error
import av.stream
import av.video.stream
import numpy as np

from workers.media.errors import (
    CorruptVideoError,
    DecodeTimeoutError,
    MediaError,
    NotAVideoError,
    TooLargeError,
    UnsupportedCodecError,
)
from workers.media.limits import Deadline, MediaLimits


class ByteStream(Protocol):
    """Anything with ``read(size)``: an open file, an upload body, an object-store stream."""

    def read(self, size: int, /) -> bytes | None: ...


VideoSource = str | os.PathLike[str] | ByteStream

_SPOOL_CHUNK = 1 << 20
# Leading bytes of containers that hold video: a file that starts like one but does not open is
# a damaged video, anything else is not a video at all.
_CONTAINER_MAGIC: tuple[tuple[int, bytes], ...] = (
    (4, b"ftyp"),
    (4, b"moov"),
    (4, b"mdat"),
    (4, b"free"),
    (4, b"wide"),
    (4, b"skip"),
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (0, b"RIFF"),
    (0, b"OggS"),
    (0, b"FLV"),
    (0, b"\x00\x00\x01\xba"),  # MPEG program stream
    (0, b"YUV4MPEG2"),
    (0, b"\x30\x26\xb2\x75"),  # ASF / WMV
)
# Containers that store frames in decode order without presentation times: FFmpeg guesses the
# times, and with reordered frames (B-frames, packed B-frames and their placeholder packets in old
# MPEG-4 AVI files) the guess puts frames in a different order than the decoder outputs them.
_DECODE_ORDER_ONLY_FORMATS = frozenset({"avi"})


@dataclass(frozen=True)
class VideoInfo:
    """What a video is, measured by scanning every packet of its first video stream.

    ``width``/``height`` are as displayed (after ``rotation``); ``coded_width``/``coded_height``
    as stored. ``rotation`` is counter-clockwise degrees, as FFmpeg's display matrix reads.
    ``frame_count`` counts the packets actually present; ``declared_frame_count`` is what the
    header claims (0 when it claims nothing). ``keyframes`` are frame indices in presentation order.
    """

    duration_s: float
    fps: float
    variable_fps: bool
    width: int
    height: int
    coded_width: int
    coded_height: int
    rotation: int
    codec: str
    pix_fmt: str | None
    bit_rate: int | None
    has_audio: bool
    frame_count: int
    declared_frame_count: int
    keyframes: tuple[int, ...]
    container: str
    size_bytes: int
    truncated: bool

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["keyframes"] = list(self.keyframes)
        return data


@dataclass(frozen=True)
class FrameTable:
    """Per-frame timing from the packet scan, in presentation order.

    ``pts[i]`` is frame ``i``'s presentation timestamp (stream time base) and ``keyframes`` the
    indices of keyframes (FFmpeg's MP4 and Matroska demuxers seek by presentation time, so a
    keyframe's pts is where to seek for its GOP). ``exact`` is false when timestamps are missing
    or repeat, so frames can only be counted.
    """

    pts: np.ndarray
    keyframes: np.ndarray
    time_base: Fraction
    exact: bool

    def keyframe_pts(self, gop: int) -> int:
        """Where to seek for GOP number ``gop`` (0-based)."""
        return int(self.pts[self.keyframes[gop]])

    def times_s(self) -> np.ndarray:
        """Presentation time of each frame in seconds from the first frame."""
        if len(self.pts) == 0:
            return np.zeros(0)
        return np.asarray((self.pts - self.pts[0]) * float(self.time_base), dtype=np.float64)

    def end_s(self) -> float:
        """End of the last frame in seconds from the first frame (its duration estimated)."""
        times = self.times_s()
        if len(times) < 2:
            return 1.0 / 30.0 if len(times) else 0.0
        return float(times[-1] + np.median(np.diff(times)))


def spool_to_file(
    stream: ByteStream, *, directory: str | os.PathLike[str] | None = None, limits: MediaLimits | None = None
) -> Path:
    """Copy a (possibly non-seekable) byte stream to a temporary file and return its path.

    Demuxers need random access (an MP4 written without faststart keeps its index at the end),
    so uploads and object-store bodies land on disk first. The caller deletes the file.
    """
    limits = limits or MediaLimits()
    handle, name = tempfile.mkstemp(prefix="tsmindex-", suffix=".video", dir=directory)
    written = 0
    try:
        with os.fdopen(handle, "wb") as out:
            while chunk := stream.read(_SPOOL_CHUNK):
                written += len(chunk)
                if written > limits.max_upload_bytes:
                    raise TooLargeError(f"more than {limits.max_upload_bytes} bytes")
                out.write(chunk)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


@contextlib.contextmanager
def local_path(source: VideoSource, *, limits: MediaLimits) -> Iterator[Path]:
    """A local file path for ``source``; file objects are spooled and removed afterwards."""
    if isinstance(source, str | os.PathLike):
        yield Path(source)
        return
    path = spool_to_file(source, limits=limits)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _looks_like_container(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(16)
    return any(head[offset : offset + len(magic)] == magic for offset, magic in _CONTAINER_MAGIC)


def _is_cover_art(stream: av.stream.Stream) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


@contextlib.contextmanager
def open_video(
    path: Path, *, limits: MediaLimits, deadline: Deadline, threads: int = 1, hwaccel: Any = None
) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """Open ``path`` and its first video stream, turning every failure into a ``MediaError``.

    ``hwaccel`` (``workers.media.gpu.hwaccel_for``) decodes on a GPU, frames arriving in host memory.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise NotAVideoError(f"cannot read the file: {exc.strerror}") from exc
    if size == 0:
        raise NotAVideoError("the file is empty")
    if size > limits.max_upload_bytes:
        raise TooLargeError(f"{size} bytes is more than the limit of {limits.max_upload_bytes}")
    # PyAV's timeout interrupts a blocking open or read (e.g. probing a pathological file).
    timeout = max(deadline.remaining_s, 0.001)
    try:
        container = av.open(
            str(path), "r", timeout=(timeout, timeout), metadata_errors="replace", hwaccel=hwaccel
        )
    except av.error.ExitError as exc:
        raise DecodeTimeoutError("opening the file exceeded the decode budget") from exc
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        if _looks_like_container(path):
            raise CorruptVideoError(f"damaged container: {exc}") from exc
        raise NotAVideoError(f"not a media file: {exc}") from exc
    try:
        streams = [s for s in container.streams.video if not _is_cover_art(s)]
        if not streams:
            raise NotAVideoError("the file has no video stream")
        stream = streams[0]
        ctx = stream.codec_context
        if ctx is None or ctx.codec is None or not ctx.codec.name or ctx.codec.name == "none":
            raise UnsupportedCodecError("this build has no decoder for the video codec")
        width, height = ctx.width, ctx.height
        if width * height > limits.max_pixels_per_frame:
            raise TooLargeError(
                f"{width}x{height} is more than {limits.max_pixels_per_frame} pixels per frame"
            )
        if width <= 0 or height <= 0:
            raise CorruptVideoError("the video stream declares no frame size")
        # One decode thread per job: workers run one job per core.
        ctx.thread_type = "SLICE"
        ctx.thread_count = threads
        yield container, stream
    except av.error.FFmpegError as exc:
        raise CorruptVideoError(f"damaged video stream: {exc}") from exc
    finally:
        container.close()


@dataclass
class _Scan:
    table: FrameTable
    truncated: bool
    rotation: int
    decodable: bool


def scan(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, *, deadline: Deadline
) -> _Scan:
    """Read every packet of ``stream`` (no decoding beyond the first frame) and build its frame table.

    The first frame is decoded on the way: it proves the codec works and carries the display
    matrix (rotation). A demux error part-way (a truncated file) ends the scan with what was read.
    """
    pts: list[int | None] = []
    key: list[bool] = []
    reordered = False
    truncated = False
    rotation: int | None = None
    decode_errors = 0
    try:
        for packet in container.demux(stream):
            deadline.check()
            if packet.size == 0:
                continue
            if packet.is_corrupt:
                truncated = True
            pts.append(packet.pts)
            key.append(packet.is_keyframe)
            reordered = reordered or packet.pts != packet.dts
            if rotation is None and decode_errors < 32:
                try:
                    for frame in stream.codec_context.decode(packet):
                        rotation = _rotation_of(frame, stream)
                        break
                except av.error.FFmpegError:
                    decode_errors += 1
    except av.error.ExitError as exc:
        raise DecodeTimeoutError("reading the file exceeded the decode budget") from exc
    except (av.error.FFmpegError, OSError):
        truncated = True
    if rotation is None:
        with contextlib.suppress(av.error.FFmpegError):
            for frame in stream.codec_context.decode(None):
                rotation = _rotation_of(frame, stream)
                break
    guessed_times = reordered and bool(_DECODE_ORDER_ONLY_FORMATS & set(container.format.name.split(",")))
    return _Scan(
        table=_frame_table(
            pts,
            key,
            stream.time_base or Fraction(1, 90000),
            stream.guessed_rate or stream.average_rate,
            trust_pts=not guessed_times,
        ),
        truncated=truncated,
        rotation=rotation or 0,
        decodable=rotation is not None,
    )


def _rotation_of(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> int:
    """Counter-clockwise rotation in quarter turns' degrees (0, 90, 180 or 270).

    From the display matrix (MP4 track matrix, what phones write); failing that, from a legacy
    ``rotate`` tag, which counts clockwise (as some Matroska writers still store it).
    """
    with contextlib.suppress(ValueError, TypeError):
        degrees = float(frame.rotation)
        if degrees:
            return round(degrees / 90.0) % 4 * 90
    tags = {key.lower(): value for key, value in stream.metadata.items()}
    with contextlib.suppress(ValueError, TypeError):
        return round(-float(tags.get("rotate", "0")) / 90.0) % 4 * 90
    return 0


def _frame_table(
    pts: list[int | None],
    key: list[bool],
    time_base: Fraction,
    nominal_rate: Fraction | None,
    *,
    trust_pts: bool = True,
) -> FrameTable:
    n = len(pts)
    exact = trust_pts and n > 0 and all(p is not None for p in pts) and len(set(pts)) == n
    if exact:
        pts_arr = np.asarray(pts, dtype=np.int64)
        order = np.argsort(pts_arr, kind="stable")
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        key_packets = [i for i in range(n) if key[i]]
        keyframes = rank[key_packets] if key_packets else np.zeros(0, dtype=np.int64)
        return FrameTable(
            pts=pts_arr[order],
            keyframes=np.sort(np.asarray(keyframes, dtype=np.int64)),
            time_base=time_base,
            exact=True,
        )
    # No usable timestamps (a raw elementary stream, an AVI file with B-frames): number frames in
    # the order the decoder puts them out, on the stream's nominal clock.
    rate = nominal_rate if nominal_rate and nominal_rate > 0 else Fraction(30)
    return FrameTable(
        pts=np.arange(n, dtype=np.int64),
        keyframes=np.asarray([i for i in range(n) if key[i]], dtype=np.int64),
        time_base=1 / rate,
        exact=False,
    )


def describe(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    result: _Scan,
    *,
    size_bytes: int,
    limits: MediaLimits,
) -> VideoInfo:
    """Build the ``VideoInfo`` of a scanned stream and enforce the duration limit."""
    table = result.table
    if not result.decodable:
        if len(table.pts) == 0:
            raise CorruptVideoError("the video stream holds no frames")
        raise CorruptVideoError("no frame of the video stream decodes")
    times = table.times_s()
    duration = table.end_s()
    if duration > limits.max_duration_s:
        raise TooLargeError(f"{duration:.0f} s is longer than the limit of {limits.max_duration_s:.0f} s")
    intervals = np.diff(times)
    variable = False
    if len(intervals) > 1:
        median = float(np.median(intervals))
        variable = median <= 0 or float(np.abs(intervals - median).max()) > 0.1 * median
    ctx = stream.codec_context
    coded_w, coded_h = ctx.width, ctx.height
    quarter = result.rotation // 90
    width, height = (coded_h, coded_w) if quarter % 2 else (coded_w, coded_h)
    declared = stream.frames or 0
    return VideoInfo(
        duration_s=duration,
        fps=len(times) / duration if duration > 0 else 0.0,
        variable_fps=variable,
        width=width,
        height=height,
        coded_width=coded_w,
        coded_height=coded_h,
        rotation=result.rotation,
        codec=ctx.codec.name,
        pix_fmt=ctx.pix_fmt,
        bit_rate=ctx.bit_rate or container.bit_rate or None,
        has_audio=any(not _is_cover_art(s) for s in container.streams.audio),
        frame_count=len(table.pts),
        declared_frame_count=declared,
        keyframes=tuple(int(k) for k in table.keyframes),
        container=container.format.name,
        size_bytes=size_bytes,
        truncated=result.truncated or declared > len(table.pts),
    )


def probe(
    source: VideoSource, *, limits: MediaLimits | None = None, budget_s: float | None = None
) -> VideoInfo:
    """Describe a video: stream metadata plus the true frame count and keyframes from a packet scan.

    Raises a ``MediaError`` subclass for anything that is not a decodable video within ``limits``.
    """
    limits = limits or MediaLimits()
    deadline = Deadline(limits.decode_budget_s if budget_s is None else budget_s)
    with (
        local_path(source, limits=limits) as path,
        open_video(path, limits=limits, deadline=deadline) as (
            container,
            stream,
        ),
    ):
        result = scan(container, stream, deadline=deadline)
        return describe(container, stream, result, size_bytes=path.stat().st_size, limits=limits)


__all__ = [
    "FrameTable",
    "MediaError",
    "VideoInfo",
    "VideoSource",
    "describe",
    "local_path",
    "open_video",
    "probe",
    "scan",
    "spool_to_file",
]
