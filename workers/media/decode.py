"""Decode exactly the frames a sampling plan needs, converting only those.

Seeking costs a demuxer jump plus a decoder flush, decoding forward costs every frame in between;
``decode_frames`` seeks only when the next target lies in a later GOP than the decoder's position,
and lets the decoder skip non-reference frames that are not targets (no other frame depends on
them, so the targets come out bit-identical to a full decode). When the next target is itself a
keyframe, every frame before it is skipped but keyframes.

Frame ``i`` is always the ``i``-th frame a plain full decode puts out. Where the file's timestamps
or its seeks cannot be trusted to find that frame, the decoders say so and the whole file is
decoded forward instead: a slower answer, never a substituted frame.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeAlias

import av
import av.container
import av.error
import av.video.stream
import numpy as np

from workers.media.errors import DecodeTimeoutError
from workers.media.limits import Deadline, MediaLimits
from workers.media.probe import FrameTable, open_video

# An RGB frame ready for the model: uint8 [crop, crop, 3].
Converter = Callable[[av.VideoFrame], np.ndarray]
Packet: TypeAlias = "av.Packet[av.video.stream.VideoStream]"


@dataclass
class DecodeStats:
    """What a decode run cost: frames the decoder produced, seeks made, packets that failed, and
    whether it fell back to decoding the whole file forward (and why)."""

    frames_decoded: int = 0
    frames_converted: int = 0
    seeks: int = 0
    decode_errors: int = 0
    fallback: str | None = None


def make_converter(
    *, resize: int, crop: int, rotation: int = 0, interpolation: str = "BILINEAR"
) -> Converter:
    """Shorter side to ``resize`` and centre crop ``crop``, one swscale pass, then turned upright by
    ``rotation`` (counter-clockwise degrees, as ``VideoInfo.rotation``)."""
    if crop > resize:
        raise ValueError("crop must not be larger than resize")
    quarter_turns = rotation // 90 % 4

    def convert(frame: av.VideoFrame) -> np.ndarray:
        width, height = frame.width, frame.height
        scale = resize / min(width, height)
        out_w, out_h = max(crop, round(width * scale)), max(crop, round(height * scale))
        rgb = frame.reformat(width=out_w, height=out_h, format="rgb24", interpolation=interpolation)
        image = rgb.to_ndarray()  # [H, W, 3]
        if quarter_turns:
            image = np.rot90(image, quarter_turns)  # counter-clockwise, as the display matrix says
        top, left = (image.shape[0] - crop) // 2, (image.shape[1] - crop) // 2
        return np.ascontiguousarray(image[top : top + crop, left : left + crop])

    return convert


class VideoReader:
    """The first video stream of a local file, open for decoding, with the packets read so far.

    ``rewind`` reopens the file rather than seeking to its start: a timestamp seek to the first
    frame is approximate in some formats (MPEG program streams land a GOP or more late).
    """

    def __init__(
        self, path: Path, *, limits: MediaLimits, deadline: Deadline, threads: int = 1, hwaccel: Any = None
    ) -> None:
        self.path, self.limits, self.deadline, self.threads = path, limits, deadline, threads
        self.hwaccel = hwaccel
        self.stats = DecodeStats()
        self._stack = contextlib.ExitStack()
        self.container, self.stream = self._open()
        self._packets = self._demux()

    def _open(self) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
        return self._stack.enter_context(
            open_video(
                self.path,
                limits=self.limits,
                deadline=self.deadline,
                threads=self.threads,
                hwaccel=self.hwaccel,
            )
        )

    def _demux(self) -> Iterator[Packet]:
        """Packets of the stream until the end, or until the file stops making sense (truncation)."""
        try:
            for packet in self.container.demux(self.stream):
                if packet.size:
                    yield packet
        except av.error.ExitError as exc:
            raise DecodeTimeoutError("reading the file exceeded the decode budget") from exc
        except (av.error.FFmpegError, OSError):
            self.stats.decode_errors += 1

    def next_packet(self) -> Packet | None:
        self.deadline.check()
        return next(self._packets, None)

    def seek(self, pts: int) -> None:
        """Jump to the keyframe at or before ``pts`` (stream time base); raises ``FFmpegError``."""
        self.container.seek(pts, stream=self.stream, backward=True, any_frame=False)
        self.stats.seeks += 1
        self._packets = self._demux()

    def rewind(self) -> None:
        """Start again from the first packet with a fresh decoder."""
        self._stack.close()
        self.container, self.stream = self._open()
        self._packets = self._demux()

    def decode(self, packet: Packet | None) -> list[av.VideoFrame]:
        """Decode one packet (``None`` drains); a damaged packet costs its frames, never the run."""
        try:
            return list(self.stream.codec_context.decode(packet))
        except av.error.ExitError as exc:
            raise DecodeTimeoutError("decoding exceeded the decode budget") from exc
        except av.error.FFmpegError:
            self.stats.decode_errors += 1
            return []

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _Untrusted(Exception):
    """The file contradicted its frame table (``reason`` says how); decode it forward instead."""

    def __init__(self, reason: str, *, keep_timestamps: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.keep_timestamps = keep_timestamps


def decode_frames(
    reader: VideoReader,
    table: FrameTable,
    targets: Sequence[int],
    convert: Converter,
    *,
    skip_nonref: bool = True,
) -> dict[int, np.ndarray]:
    """Decode and convert the frames with presentation indices ``targets``; missing ones are absent.

    Seeks and skips by ``table`` when its timestamps are exact; if the file then contradicts the
    table, it starts again and decodes the whole file forward (``reader.stats.fallback`` says why).
    """
    if table.exact and len(table.keyframes):
        try:
            return _TargetedDecode(reader, table, targets, convert, skip_nonref=skip_nonref).run()
        except _Untrusted as untrusted:
            reader.stats.fallback = untrusted.reason
            reader.rewind()
            table_or_none = table if untrusted.keep_timestamps else None
            return decode_sequential(reader, table_or_none, targets, convert)
    return decode_sequential(reader, table, targets, convert)


class _TargetedDecode:
    """One pass over the targets in presentation order, seeking GOP to GOP.

    Targets come out of the decoder in order (``cursor``); their packets go in in decode order
    (``fed``). Once the next target whose packet has not gone in lies in a GOP whose keyframe has not
    either, the decoder is drained (the targets inside come out without decoding further frames) and
    seeks there: a fresh decoder makes the first frame out prove where the seek landed.
    """

    def __init__(
        self,
        reader: VideoReader,
        table: FrameTable,
        targets: Sequence[int],
        convert: Converter,
        *,
        skip_nonref: bool,
    ) -> None:
        self.reader, self.convert, self.skip_nonref = reader, convert, skip_nonref
        self.ctx = reader.stream.codec_context
        self.wanted = sorted(set(targets))
        self.pts_of = [int(p) for p in table.pts]
        self.index_of = {p: i for i, p in enumerate(self.pts_of)}
        self.target_pts = {self.pts_of[i] for i in self.wanted}
        self.keyframes = [int(k) for k in table.keyframes]
        self.is_keyframe = set(self.keyframes)
        self.out: dict[int, np.ndarray] = {}
        self.cursor = 0  # next entry of ``wanted`` to come out of the decoder
        self.feed = 0  # first entry of ``wanted`` whose packet may not have gone in yet
        self.fed: set[int] = set()  # pts of target packets that went in since the last seek
        self.fed_gop = 0  # the latest GOP whose keyframe went in (or was seeked to)
        self.seeked_for: int | None = None  # the target of the last seek, until a frame comes out
        self.landing: int | None = None  # the keyframe of the last seek, until a packet comes
        self.last_pts: int | None = None  # since the last seek, frames come out in pts order
        self.errors_at_seek = 0  # a packet that fails explains a first frame past the target

    def gop(self, index: int) -> int:
        return bisect.bisect_right(self.keyframes, index) - 1

    def run(self) -> dict[int, np.ndarray]:
        while self.cursor < len(self.wanted):
            upcoming = self.upcoming()
            if upcoming is None or self.gop(upcoming) > self.fed_gop:
                self.ctx.skip_frame = "DEFAULT"
                self.take(self.reader.decode(None))
                self.ctx.flush_buffers()
                if upcoming is None:
                    break  # every target went in: what did not come out did not decode
                self.seek(self.gop(upcoming), upcoming)
                continue
            packet = self.reader.next_packet()
            if packet is not None:
                self.note_fed(packet)
            self.take(self.reader.decode(packet))
            if packet is None:
                break
        self.ctx.skip_frame = "DEFAULT"
        return self.out

    def upcoming(self) -> int | None:
        """The first target whose packet has not gone into the decoder, if any."""
        self.feed = max(self.feed, self.cursor)
        while self.feed < len(self.wanted) and self.pts_of[self.wanted[self.feed]] in self.fed:
            self.feed += 1
        return self.wanted[self.feed] if self.feed < len(self.wanted) else None

    def seek(self, gop: int, target: int) -> None:
        try:
            self.reader.seek(self.pts_of[self.keyframes[gop]])
        except av.error.FFmpegError as exc:
            raise _Untrusted("the file cannot seek", keep_timestamps=True) from exc
        self.fed_gop, self.seeked_for, self.last_pts = gop, target, None
        self.landing = self.keyframes[gop]
        self.errors_at_seek = self.reader.stats.decode_errors
        self.fed.clear()

    def note_fed(self, packet: Packet) -> None:
        """Record what goes into the decoder and set what it may skip of ``packet``."""
        index = self.index_of.get(packet.pts) if packet.pts is not None else None
        if self.landing is not None:
            # Past the keyframe, a flushed decoder has no reference and may put out nothing at all.
            if index is None or index > self.landing:
                raise _Untrusted("a seek went past its target", keep_timestamps=True)
            self.landing = None
        if index is not None and packet.is_keyframe:
            self.fed_gop = max(self.fed_gop, self.gop(index))
        if self.skip_nonref:
            self.ctx.skip_frame = _skip_mode(
                packet, self.target_pts, next_is_keyframe=self.upcoming() in self.is_keyframe
            )
        if packet.pts in self.target_pts:
            self.fed.add(int(packet.pts))

    def take(self, frames: list[av.VideoFrame]) -> None:
        """Check each frame against the table and keep the targets."""
        for frame in frames:
            pts = frame.pts
            index = self.index_of.get(pts) if pts is not None else None
            if pts is None or index is None:
                continue
            self.reader.stats.frames_decoded += 1
            if self.last_pts is not None and pts <= self.last_pts:
                raise _Untrusted("frames come out of timestamp order", keep_timestamps=False)
            overshot = self.seeked_for is not None and index > self.seeked_for
            if overshot and self.reader.stats.decode_errors == self.errors_at_seek:
                raise _Untrusted("a seek went past its target", keep_timestamps=True)
            self.last_pts, self.seeked_for = pts, None
            while self.cursor < len(self.wanted) and self.wanted[self.cursor] < index:
                self.cursor += 1  # a target the decoder never produced (damaged): left out
            if self.cursor < len(self.wanted) and self.wanted[self.cursor] == index:
                self.out[index] = self.convert(frame)
                self.reader.stats.frames_converted += 1
                self.cursor += 1


def _skip_mode(
    packet: Packet, target_pts: set[int], *, next_is_keyframe: bool
) -> Literal["DEFAULT", "NONKEY", "NONREF"]:
    """What the decoder may drop of ``packet``: nothing of a target; on the way to a keyframe
    target, everything but keyframes; otherwise frames no other frame references."""
    if packet.pts in target_pts:
        return "DEFAULT"
    return "NONKEY" if next_is_keyframe else "NONREF"


def decode_sequential(
    reader: VideoReader, table: FrameTable | None, targets: Sequence[int], convert: Converter
) -> dict[int, np.ndarray]:
    """Decode every frame from the reader's position and convert the targets (the naive baseline).

    Frames are numbered by timestamp when ``table`` is exact, else in output order.
    """
    stats = reader.stats
    wanted = set(targets)
    out: dict[int, np.ndarray] = {}
    index_of = {int(p): i for i, p in enumerate(table.pts)} if table and table.exact else None
    counter = 0
    for packet in itertools.chain(iter(reader.next_packet, None), [None]):
        for frame in reader.decode(packet):
            if index_of is not None:
                index = index_of.get(frame.pts) if frame.pts is not None else None
                if index is None:
                    continue
            else:
                index = counter
                counter += 1
            stats.frames_decoded += 1
            if index in wanted and index not in out:
                out[index] = convert(frame)
                stats.frames_converted += 1
    return out
