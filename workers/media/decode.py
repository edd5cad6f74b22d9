"""Decode exactly the frames a sampling plan needs, converting only those.

Seeking costs a demuxer jump plus a decoder flush, decoding forward costs every frame in between;
``decode_frames`` seeks only when the next target lies in a later GOP than the decoder's position,
and lets the decoder skip non-reference frames that are not targets (no other frame depends on
them, so the targets come out bit-identical to a full decode).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import av
import av.container
import av.error
import av.video.stream
import numpy as np

from workers.media.errors import DecodeTimeoutError
from workers.media.limits import Deadline
from workers.media.probe import FrameTable

# An RGB frame ready for the model: uint8 [crop, crop, 3].
Converter = Callable[[av.VideoFrame], np.ndarray]


@dataclass
class DecodeStats:
    """What a decode run cost: frames the decoder produced, seeks made, packets that failed."""

    frames_decoded: int = 0
    frames_converted: int = 0
    seeks: int = 0
    decode_errors: int = 0


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


def _decode(
    stream: av.video.stream.VideoStream,
    packet: av.Packet[av.video.stream.VideoStream] | None,
    stats: DecodeStats,
) -> list[av.VideoFrame]:
    """Decode one packet; a damaged packet costs its frames, never the run."""
    try:
        return list(stream.codec_context.decode(packet))
    except av.error.ExitError as exc:
        raise DecodeTimeoutError("decoding exceeded the decode budget") from exc
    except av.error.FFmpegError:
        stats.decode_errors += 1
        return []


def _packets(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, stats: DecodeStats
) -> Iterator[av.Packet[av.video.stream.VideoStream]]:
    """Packets of ``stream`` until the end, or until the file stops making sense (truncation)."""
    try:
        for packet in container.demux(stream):
            if packet.size:
                yield packet
    except av.error.ExitError as exc:
        raise DecodeTimeoutError("reading the file exceeded the decode budget") from exc
    except (av.error.FFmpegError, OSError):
        stats.decode_errors += 1


def decode_frames(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    table: FrameTable,
    targets: Sequence[int],
    convert: Converter,
    *,
    deadline: Deadline,
    skip_nonref: bool = True,
) -> tuple[dict[int, np.ndarray], DecodeStats]:
    """Decode and convert the frames with presentation indices ``targets``; missing ones are absent.

    Needs exact timestamps (``table.exact``); otherwise use :func:`decode_sequential`.
    """
    stats = DecodeStats()
    wanted = sorted(set(targets))
    out: dict[int, np.ndarray] = {}
    if not wanted:
        return out, stats
    index_of = {int(p): i for i, p in enumerate(table.pts)}
    target_pts = {int(table.pts[i]) for i in wanted}
    keyframes = [int(k) for k in table.keyframes]
    ctx = stream.codec_context

    def gop(index: int) -> int:
        return bisect.bisect_right(keyframes, index) - 1

    position = 0  # highest frame index the decoder has reached (or been seeked to)
    can_seek = table.exact and bool(keyframes)
    seeked_for: int | None = None  # the target of the last seek, until a frame comes out
    cursor = 0  # next entry of ``wanted``
    packets = _packets(container, stream, stats)

    def seek(pts: int) -> Iterator[av.Packet[av.video.stream.VideoStream]]:
        container.seek(pts, stream=stream, backward=True, any_frame=False)
        stats.seeks += 1
        return _packets(container, stream, stats)

    while cursor < len(wanted):
        target = wanted[cursor]
        if can_seek and gop(target) > gop(position):
            g = gop(target)
            try:
                packets = seek(table.keyframe_pts(g))
                position, seeked_for = keyframes[g], target
            except av.error.FFmpegError:
                can_seek = False  # keep decoding forward from where the demuxer is
        packet = next(packets, None)
        deadline.check()
        if packet is not None and skip_nonref:
            # Only non-target frames may be dropped, and only those no other frame references.
            ctx.skip_frame = "DEFAULT" if packet.pts in target_pts else "NONREF"
        overshot = False
        for frame in _decode(stream, packet, stats):
            index = index_of.get(frame.pts) if frame.pts is not None else None
            if index is None:
                continue
            stats.frames_decoded += 1
            if seeked_for is not None and index > seeked_for:
                overshot = True  # the index sent the demuxer past the target
                break
            seeked_for = None
            position = max(position, index)
            while cursor < len(wanted) and wanted[cursor] < index:
                cursor += 1  # a target the decoder never produced (damaged): left out
            if cursor < len(wanted) and wanted[cursor] == index:
                out[index] = convert(frame)
                stats.frames_converted += 1
                cursor += 1
        if overshot:
            # Seeking cannot be trusted in this file: decode forward from its first keyframe.
            can_seek, seeked_for, position = False, None, 0
            packets = seek(table.keyframe_pts(0))
            continue
        if packet is None:
            break
    ctx.skip_frame = "DEFAULT"
    return out, stats


def decode_sequential(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    table: FrameTable | None,
    targets: Sequence[int],
    convert: Converter,
    *,
    deadline: Deadline,
) -> tuple[dict[int, np.ndarray], DecodeStats]:
    """Decode every frame from the decoder's position and convert the targets (the naive baseline).

    Frames are numbered by timestamp when ``table`` is exact, else in output order.
    """
    stats = DecodeStats()
    wanted = set(targets)
    out: dict[int, np.ndarray] = {}
    index_of = {int(p): i for i, p in enumerate(table.pts)} if table and table.exact else None
    counter = 0
    for packet in itertools.chain(_packets(container, stream, stats), [None]):
        deadline.check()
        for frame in _decode(stream, packet, stats):
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
    return out, stats
