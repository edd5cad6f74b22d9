"""Frames from a video file or a stream URL PyAV opens (RTSP, HTTP, HLS), converted for the model and,
for a recording, paced at its own speed so that it plays as if live."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.container
import av.error
import numpy as np

from workers.media.decode import make_converter


class SourceError(Exception):
    """The source cannot be opened or holds no video."""


@dataclass(frozen=True)
class SourceFrame:
    index: int  # decoded frame number, from 0
    t_s: float  # presentation time from the first frame
    rgb: np.ndarray  # uint8 [crop, crop, 3], as the indexer feeds the model


def is_url(source: str) -> bool:
    return "://" in source


def open_source(source: str, *, timeout_s: float) -> av.container.InputContainer:
    """Open a path or URL; ``timeout_s`` bounds opening and each read of a network source."""
    if not is_url(source) and not Path(source).is_file():
        raise SourceError(f"{source}: no such file")
    options = {"rtsp_transport": "tcp"} if source.startswith(("rtsp://", "rtsps://")) else {}
    try:
        container = av.open(source, options=options, timeout=(timeout_s, timeout_s))
    except (av.error.FFmpegError, OSError) as exc:
        raise SourceError(f"cannot open {source}: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise SourceError(f"{source} has no video stream")
    return container


def read_frames(
    source: str,
    *,
    resize: int,
    crop: int,
    speed: float = 1.0,
    every: int = 1,
    timeout_s: float = 10.0,
    max_frames: int | None = None,
) -> Iterator[SourceFrame]:
    """Every ``every``-th frame of ``source``, shorter side to ``resize``, centre crop ``crop``.

    ``speed`` > 0 paces frames to their timestamps divided by ``speed`` (1: real time); 0 reads as
    fast as decoding goes (a live source paces itself).
    """
    container = open_source(source, timeout_s=timeout_s)
    convert = make_converter(resize=resize, crop=crop)
    try:
        stream = container.streams.video[0]
        rate = float(stream.average_rate) if stream.average_rate else 25.0
        started = time.monotonic()
        first: float | None = None
        emitted = 0
        try:
            frames = container.decode(stream)
            for index, frame in enumerate(frames):
                if index % every:
                    continue
                t = float(frame.time) if frame.time is not None else index / rate
                first = t if first is None else first
                if speed > 0:
                    delay = started + (t - first) / speed - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                yield SourceFrame(index=index, t_s=t - first, rgb=convert(frame))
                emitted += 1
                if max_frames is not None and emitted >= max_frames:
                    return
        except av.error.FFmpegError as exc:
            if first is None:
                raise SourceError(f"{source}: no frame could be decoded: {exc}") from exc
            # A stream that breaks off mid-way ends the run with what it gave.
    finally:
        container.close()
