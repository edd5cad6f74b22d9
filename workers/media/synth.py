"""Synthetic videos whose frames carry their own index, for tests, benchmarks and demos.

Each frame shows a 4 x 4 grid in its central square: the top-left cell is red and the top-right
cell blue (orientation markers), the other 14 cells are the bits of the frame index (white = 1).
The grid survives compression, "shorter side to R, centre crop C" (for C/R >= 0.8) and rotation,
so a decoder-side check can read back which source frame, in which orientation, it was given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import av
import av.codec
import av.error
import numpy as np

GRID = 4
GRID_FRACTION = 0.8  # side of the grid relative to the shorter side of the displayed frame
INDEX_BITS = GRID * GRID - 2
MAX_INDEX = 2**INDEX_BITS - 1
_RED = (255, 0, 0)
_BLUE = (0, 0, 255)
_MARKERS = {(0, 0): _RED, (0, GRID - 1): _BLUE}
_BIT_CELLS = [(r, c) for r in range(GRID) for c in range(GRID) if (r, c) not in _MARKERS]

_ENCODER_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"preset": "veryfast"},
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=none"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "row-mt": "1"},
}


def paint_index(image: np.ndarray, index: int) -> None:
    """Draw the index grid into ``image`` (uint8 RGB ``[H, W, 3]``, display orientation) in place."""
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"frame index {index} does not fit in {INDEX_BITS} bits")
    height, width = image.shape[:2]
    side = int(min(height, width) * GRID_FRACTION) // GRID * GRID
    cell = side // GRID
    top, left = (height - side) // 2, (width - side) // 2
    for bit, (row, col) in enumerate(_BIT_CELLS):
        value = 235 if (index >> bit) & 1 else 16
        image[top + row * cell : top + (row + 1) * cell, left + col * cell : left + (col + 1) * cell] = value
    for (row, col), colour in _MARKERS.items():
        image[top + row * cell : top + (row + 1) * cell, left + col * cell : left + (col + 1) * cell] = colour


def read_index(image: np.ndarray, *, visible: float = 1.0) -> int:
    """Read the index drawn by :func:`paint_index` back from a displayed (possibly cropped) frame.

    ``visible`` is the part of the source's shorter side that ``image``'s shorter side shows
    (``crop / resize`` after "shorter side to resize, centre crop crop"). Raises ``ValueError``
    when the orientation markers are not where they belong (wrong rotation, wrong content).
    """
    height, width = image.shape[:2]
    side = min(height, width) * GRID_FRACTION / visible
    cell = side / GRID
    top, left = (height - side) / 2, (width - side) / 2

    def cell_mean(row: int, col: int) -> np.ndarray:
        # The centre half of the cell: away from resampling and chroma bleed at its edges.
        y0, y1 = int(top + (row + 0.25) * cell), int(top + (row + 0.75) * cell)
        x0, x1 = int(left + (col + 0.25) * cell), int(left + (col + 0.75) * cell)
        mean: np.ndarray = image[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)].reshape(-1, 3).mean(axis=0)
        return mean

    for (row, col), colour in _MARKERS.items():
        seen = cell_mean(row, col)
        if np.abs(seen - np.asarray(colour, dtype=np.float64)).max() > 90:
            raise ValueError(f"orientation marker at cell {(row, col)} reads {seen.round()}, not {colour}")
    index = 0
    for bit, (row, col) in enumerate(_BIT_CELLS):
        if cell_mean(row, col).mean() > 128:
            index |= 1 << bit
    return index


def _texture(height: int, width: int, seed: int) -> np.ndarray:
    """A blocky random texture with fine detail (uint8 RGB, values in [40, 239)): keyframes cost
    what detailed footage costs to code."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 216, size=(height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
    tile = np.repeat(np.repeat(coarse, 16, axis=0), 16, axis=1)[:height, :width]
    noise = rng.integers(0, 24, size=(height, width, 3), dtype=np.uint8)
    return np.asarray(tile + noise, dtype=np.uint8)


def make_video(
    path: str | Path,
    *,
    frames: int,
    fps: float = 30.0,
    size: tuple[int, int] = (160, 120),
    codec: str = "libx264",
    gop: int | None = None,
    rotation: int | None = None,
    rotation_tag: bool = False,
    vfr_timestamps: Sequence[float] | None = None,
    draw_index: bool = True,
    bframes: int | None = None,
    options: Mapping[str, str] | None = None,
    audio: bool = False,
    container_options: Mapping[str, str] | None = None,
    grain: int = 0,
) -> Path:
    """Encode a synthetic clip and return its path; the container follows the file extension.

    ``size`` is the displayed (width, height); with ``rotation`` (degrees counter-clockwise, as
    FFmpeg's display matrix and ``VideoFrame.rotation`` read it) the coded picture is stored
    rotated the other way, so a player that honours the matrix shows the grid upright. With
    ``rotation_tag`` the rotation goes into a legacy ``rotate`` tag (clockwise degrees) instead.
    ``vfr_timestamps`` gives each frame's presentation time in seconds (variable frame rate).
    ``container_options`` go to the muxer, e.g. ``{"movflags": "faststart"}`` for the MP4 index
    ahead of the media data (without it PyAV writes the index at the end). ``grain`` adds fresh
    noise of that amplitude to every frame, like a camera sensor: without it the panning texture
    is perfectly predictable and inter frames cost far less than in camera footage.
    """
    path = Path(path)
    if vfr_timestamps is not None and len(vfr_timestamps) != frames:
        raise ValueError("vfr_timestamps needs one time per frame")
    quarter_turns = 0 if rotation is None else (rotation // 90) % 4
    if rotation is not None and rotation % 90:
        raise ValueError("rotation must be a multiple of 90 degrees")
    disp_w, disp_h = size
    if not 0 <= grain <= 8:
        raise ValueError("grain must be between 0 and 8")
    if codec == "libx265" and min(disp_w, disp_h) < 64:
        # x265 writes out of bounds on tiny pictures (heap corruption seen at 48x32).
        raise ValueError("libx265 needs at least 64 x 64 pixels")
    coded_w, coded_h = (disp_h, disp_w) if quarter_turns % 2 else (disp_w, disp_h)
    # Moving texture: a window sliding over a larger image, i.e. camera pan, cheap to draw.
    pad = 64
    texture = _texture(disp_h + 2 * pad, disp_w + 2 * pad, seed=coded_w * 7919 + coded_h)
    # A few noise fields reused in turn: encoders reference only recent frames, and drawing fresh
    # noise for every 1080p frame would dominate the encoding time.
    rng = np.random.default_rng(frames)
    noise = [
        rng.integers(0, 2 * grain + 1, size=(disp_h, disp_w, 3), dtype=np.uint8)
        for _ in range(7 if grain else 0)
    ]

    time_base = Fraction(1, 90000) if vfr_timestamps is not None else Fraction(1, round(fps * 1000))
    with av.open(str(path), "w", options=dict(container_options or {})) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        if not isinstance(stream, av.VideoStream):
            raise ValueError(f"{codec} is not a video encoder")
        stream.width, stream.height = coded_w, coded_h
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = time_base
        opts: dict[str, object] = dict(_ENCODER_OPTIONS.get(codec, {}))
        if gop is not None:
            stream.codec_context.gop_size = gop
            if codec == "libx264":
                opts["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0"
            elif codec == "libx265":
                opts["x265-params"] = f"log-level=none:keyint={gop}:min-keyint={gop}:scenecut=0"
            elif codec == "libvpx-vp9":
                opts["g"] = str(gop)
                opts["keyint_min"] = str(gop)
        if bframes is not None:
            stream.codec_context.max_b_frames = bframes
            if codec == "libx264":
                opts["bframes"] = str(bframes)
        opts.update(options or {})
        stream.options = opts
        stream.codec_context.thread_count = 2
        if rotation is not None and rotation_tag:
            stream.metadata["rotate"] = str(-rotation % 360)
        elif rotation is not None:
            stream.set_display_rotation(rotation)
        audio_stream = None
        if audio:
            audio_stream = container.add_stream("aac", rate=16000)
            audio_stream.layout = "mono"

        for i in range(frames):
            dy = int(pad + pad * np.sin(i / 17.0)) % (2 * pad)
            dx = (i * 3) % (2 * pad)
            image = np.ascontiguousarray(texture[dy : dy + disp_h, dx : dx + disp_w])
            if grain:
                # The texture stays below 239, so adding at most 16 cannot wrap around.
                image += noise[i % len(noise)]
            if draw_index:
                paint_index(image, i)
            coded = np.ascontiguousarray(np.rot90(image, -quarter_turns))
            frame = av.VideoFrame.from_ndarray(coded, format="rgb24")
            if vfr_timestamps is not None:
                frame.pts = round(vfr_timestamps[i] / time_base)
            else:
                frame.pts = round(i / fps / time_base)
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)

        if audio_stream is not None:
            duration = frames / fps if vfr_timestamps is None else float(vfr_timestamps[-1]) + 1 / fps
            _encode_tone(container, audio_stream, duration)
    return path


def encoder_available(codec: str) -> bool:
    """Whether this PyAV build can encode ``codec`` (e.g. ``libx265`` is missing from some builds)."""
    try:
        av.codec.Codec(codec, "w")
    except (av.error.FFmpegError, ValueError):
        return False
    return True


def make_audio(path: str | Path, *, duration_s: float = 1.0) -> Path:
    """An audio-only file (AAC), e.g. a song uploaded where a video was expected."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        _encode_tone(container, stream, duration_s)
    return path


def _encode_tone(container: av.container.OutputContainer, stream: av.AudioStream, duration_s: float) -> None:
    rate = 16000
    samples = np.sin(2 * np.pi * 440 * np.arange(int(duration_s * rate)) / rate).astype(np.float32)
    chunk = 1024
    for start in range(0, len(samples), chunk):
        block = samples[start : start + chunk]
        frame = av.AudioFrame.from_ndarray(block[None, :], format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
