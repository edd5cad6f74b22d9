"""A procedural motion dataset in which single frames carry no class information.

A textured object moves over a static textured background. Each clip has three parameters: the
object's centre x, centre y and size. Each one either rises, falls or stays frozen over the clip, and
all of them are drawn so that every class has the same per-frame distribution: a moving parameter
goes from a random base to ``base + (T - 1) * step`` (or the reverse), and a frozen one sits at
``base + k * step`` for a random ``k``. A network that sees frames one at a time (TSN) therefore sees
the same multiset of frames for "left" and "right" and can do no better than chance; only temporal
modeling (TSM) tells the classes apart. Placing the object "so that it stays inside the frame" would
leak the direction through the first frame's position, which is why the tracks are built this way.

Rotation is left out: at 64 px a small spinning object moves too few pixels to be learned.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIRECTION_CLASSES: tuple[str, ...] = ("left", "right", "up", "down")
MOTION_CLASSES: tuple[str, ...] = (*DIRECTION_CLASSES, "approach", "recede", "static")

# Which parameter each class moves, and which way (+1 rises, -1 falls). Image y grows downwards.
_TRACKS: dict[str, dict[str, int]] = {
    "left": {"x": -1},
    "right": {"x": 1},
    "up": {"y": -1},
    "down": {"y": 1},
    "approach": {"size": 1},
    "recede": {"size": -1},
    "static": {},
}

LABELS_FILE = "labels.csv"


@dataclass(frozen=True)
class MotionSpec:
    """What a generated clip looks like; sizes in pixels of a ``size`` x ``size`` frame."""

    classes: tuple[str, ...] = DIRECTION_CLASSES
    size: int = 64
    frames: int = 8
    fps: int = 8

    def __post_init__(self) -> None:
        unknown = [c for c in self.classes if c not in _TRACKS]
        if unknown:
            raise ValueError(f"unknown motion classes {unknown}; known: {', '.join(MOTION_CLASSES)}")
        if len(set(self.classes)) != len(self.classes) or not self.classes:
            raise ValueError("classes must be distinct and non-empty")
        if self.size < 16 or self.size % 2:
            raise ValueError("size must be even and at least 16 (H.264 4:2:0 needs even sides)")
        if self.frames < 2:
            raise ValueError("a motion clip needs at least 2 frames")


def _track(rng: np.random.Generator, direction: int, lo: float, hi: float, step: float, t: int) -> np.ndarray:
    """Values of one parameter over ``t`` frames: rising, falling (direction +1/-1) or frozen (0)."""
    span = step * (t - 1)
    base = rng.uniform(lo, hi - span)
    k = np.arange(t, dtype=np.float64)
    if direction > 0:
        return base + k * step
    if direction < 0:
        return base + k[::-1] * step
    return np.full(t, base + rng.integers(0, t) * step)


def _smooth_noise(rng: np.random.Generator, grid: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of a ``grid`` x ``grid`` random field at coordinates u, v in [0, 1]."""
    field = rng.random((grid + 1, grid + 1))
    x = np.clip(u, 0.0, 1.0) * grid
    y = np.clip(v, 0.0, 1.0) * grid
    x0 = np.minimum(np.floor(x).astype(int), grid - 1)
    y0 = np.minimum(np.floor(y).astype(int), grid - 1)
    fx, fy = x - x0, y - y0
    top = field[y0, x0] * (1 - fx) + field[y0, x0 + 1] * fx
    bottom = field[y0 + 1, x0] * (1 - fx) + field[y0 + 1, x0 + 1] * fx
    return np.asarray(top * (1 - fy) + bottom * fy)


def _palette(rng: np.random.Generator, bright: bool) -> np.ndarray:
    """Two RGB colours in the bright (0.55..1) or dark (0..0.45) band, so objects contrast with the
    background whatever their hue."""
    lo, hi = (0.55, 1.0) if bright else (0.0, 0.45)
    return rng.uniform(lo, hi, size=(2, 3))


def _object_texture(rng: np.random.Generator) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A random pattern as a function of object-local coordinates in [0, 1] -> weights in [0, 1]."""
    kind = rng.integers(0, 3)
    n = int(rng.integers(2, 5))
    if kind == 0:
        return lambda u, v: ((np.floor(u * n) + np.floor(v * n)) % 2).astype(np.float64)
    if kind == 1:
        theta = rng.uniform(0, np.pi)
        return lambda u, v: (np.sin(2 * np.pi * n * (u * np.cos(theta) + v * np.sin(theta))) > 0).astype(
            np.float64
        )
    seed = int(rng.integers(0, 2**31))
    return lambda u, v: _smooth_noise(np.random.default_rng(seed), n + 1, u, v)


def draw_tracks(label: str, rng: np.random.Generator, *, size: int, frames: int) -> dict[str, np.ndarray]:
    """The object's centre ``x``, ``y`` and ``side`` (pixels) in each of ``frames`` frames."""
    moves = _TRACKS[label]
    # Speeds are set for 8 frames at 64 px; longer clips spread the same travel over more frames.
    scale = size / 64.0 * 7.0 / (frames - 1)
    step = rng.uniform(2.5, 4.0) * scale  # px per frame for x and y
    size_step = rng.uniform(1.2, 2.0) * scale  # px per frame for the object's side
    return {
        "x": _track(rng, moves.get("x", 0), 0.2 * size, 0.8 * size, step, frames),
        "y": _track(rng, moves.get("y", 0), 0.2 * size, 0.8 * size, step, frames),
        "side": _track(rng, moves.get("size", 0), 0.18 * size, 0.42 * size, size_step, frames),
    }


class _Scene:
    """A random textured background and object; ``draw`` places the object at a centre and side."""

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        self.size = size
        bright_object = bool(rng.integers(0, 2))
        bg_colours = _palette(rng, not bright_object)
        self.obj_colours = _palette(rng, bright_object)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5  # pixel centres
        self.xx, self.yy = xx, yy
        bg_w = _smooth_noise(rng, int(rng.integers(3, 9)), xx / size, yy / size)[..., None]
        background = bg_colours[0] * (1 - bg_w) + bg_colours[1] * bg_w  # [H, W, 3]
        background += rng.normal(0.0, 0.03, size=background.shape)  # fine grain, static like the scene
        self.background = background
        self.texture = _object_texture(rng)
        self.shape = int(rng.integers(0, 3))  # square, disc, diamond
        angle = rng.uniform(0, 2 * np.pi)
        self.cos_a, self.sin_a = np.cos(angle), np.sin(angle)

    def draw(self, x: float, y: float, side: float) -> np.ndarray:
        """One uint8 RGB frame ``[size, size, 3]`` with the object's centre at (x, y)."""
        # Object-local coordinates in [-1, 1] over the object's side, rotated by a fixed angle.
        dx, dy = (self.xx - x) / (side / 2), (self.yy - y) / (side / 2)
        a, b = self.cos_a * dx + self.sin_a * dy, -self.sin_a * dx + self.cos_a * dy
        if self.shape == 0:
            dist = np.maximum(np.abs(a), np.abs(b))
        elif self.shape == 1:
            dist = np.sqrt(a * a + b * b)
        else:
            dist = np.abs(a) + np.abs(b)
        # Anti-aliased edge about one pixel wide, so sub-pixel motion shows.
        alpha = np.clip((1.0 - dist) * side / 2 + 0.5, 0.0, 1.0)[..., None]
        w = self.texture((a + 1) / 2, (b + 1) / 2)[..., None]
        obj = self.obj_colours[0] * (1 - w) + self.obj_colours[1] * w
        frame = self.background * (1 - alpha) + obj * alpha
        out: np.ndarray = np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)
        return out


def render_clip(label: str, rng: np.random.Generator, *, size: int = 64, frames: int = 8) -> np.ndarray:
    """One clip of class ``label`` as uint8 RGB ``[T, size, size, 3]``."""
    tracks = draw_tracks(label, rng, size=size, frames=frames)
    scene = _Scene(rng, size)
    return np.stack(
        [scene.draw(x, y, s) for x, y, s in zip(tracks["x"], tracks["y"], tracks["side"], strict=True)]
    )


# Unit steps of the object's centre per direction (image y grows downwards).
_STEPS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


@dataclass(frozen=True)
class MotionPath:
    """A continuous shot whose object changes direction: frames and the true direction of each."""

    frames: np.ndarray  # uint8 [N, size, size, 3]
    labels: tuple[str, ...]  # per frame: the direction of the move that led to it ("none" first)
    changes: tuple[int, ...]  # frame indices where a new direction starts (the first is 1)
    centres: np.ndarray  # float [N, 2]: the object's (x, y) in each frame

    def window_ends(self, frames: int, length: int) -> list[tuple[str, range]]:
        """Per leg, its direction and the frames a window of ``length`` frames may end on so that its
        last ``frames`` frames all move that way."""
        legs = itertools.pairwise([*self.changes, len(self.labels)])
        return [(self.labels[start], range(max(start + frames, length) - 1, end)) for start, end in legs]


def render_path(rng: np.random.Generator, *, size: int = 32, legs: int = 12) -> MotionPath:
    """One object over one background moving along ``legs`` straight legs of equal length, each in a
    new direction (a reversal or a right-angle turn), at the per-frame speeds of the training clips.

    The legs run between the corners of a square over the centres training clips use (0.2 to 0.8 x
    ``size``); a leg lasts ``0.6 * size / speed`` frames (13-15).
    """
    if legs < 1:
        raise ValueError("a path needs at least one leg")
    speed = rng.uniform(2.5, 3.0) * size / 64.0  # px per frame, the slow half of the clips' speeds
    lo, hi = 0.2 * size, 0.8 * size
    leg_frames = round((hi - lo) / speed)
    speed = (hi - lo) / leg_frames  # legs end exactly on the corners
    side = rng.uniform(0.18, 0.3) * size
    scene = _Scene(rng, size)
    corner = [int(rng.integers(0, 2)), int(rng.integers(0, 2))]  # (x, y): 0 at lo, 1 at hi

    def at(cx: int, cy: int) -> tuple[float, float]:
        return lo + cx * (hi - lo), lo + cy * (hi - lo)

    frames, labels, changes = [scene.draw(*at(*corner), side)], ["none"], []
    centres = [at(*corner)]
    direction = ""
    for _ in range(legs):
        # From a corner, one horizontal and one vertical move stay inside the square.
        options = ["left" if corner[0] else "right", "up" if corner[1] else "down"]
        options = [d for d in options if d != direction] or options
        direction = str(rng.choice(options))
        dx, dy = _STEPS[direction]
        x, y = at(*corner)
        changes.append(len(frames))
        for k in range(1, leg_frames + 1):
            centres.append((x + dx * speed * k, y + dy * speed * k))
            frames.append(scene.draw(*centres[-1], side))
            labels.append(direction)
        corner = [corner[0] + dx, corner[1] + dy]
    return MotionPath(
        frames=np.stack(frames), labels=tuple(labels), changes=tuple(changes), centres=np.array(centres)
    )


def make_stream_dataset(
    out_dir: str | Path,
    *,
    count: int,
    seed: int,
    spec: MotionSpec = MotionSpec(classes=DIRECTION_CLASSES, size=32),
    context: int = 8,
    on_clip: Callable[[int], None] | None = None,
) -> Path:
    """Windows of ``context + spec.frames`` frames cut from ``render_path`` shots, labelled by the
    direction of their last ``spec.frames`` frames, which lie in one leg (the context before them
    usually holds a turn): what an online model sees on a stream. Classes balanced; written like
    :func:`make_motion_dataset` (mp4 files per label and ``labels.csv``)."""
    if set(spec.classes) != set(DIRECTION_CLASSES):
        raise ValueError("stream windows have the four direction classes")
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    length = context + spec.frames
    quota = dict.fromkeys(spec.classes, count // len(spec.classes))
    for extra in spec.classes[: count % len(spec.classes)]:
        quota[extra] += 1
    for name in spec.classes:
        (out / name).mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str]] = []
    while any(quota.values()):
        path = render_path(rng, size=spec.size, legs=8)
        for label, ends in path.window_ends(spec.frames, length):
            if not quota[label] or not ends:
                continue
            end = int(rng.choice(ends))
            rel = f"{label}/{label}_{len(rows):05d}.mp4"
            write_video(out / rel, path.frames[end + 1 - length : end + 1], fps=spec.fps)
            rows.append((rel, label))
            quota[label] -= 1
            if on_clip is not None:
                on_clip(len(rows) - 1)
    return write_labels_csv(out / LABELS_FILE, rows)


def write_video(path: str | Path, frames: np.ndarray, *, fps: int = 8, crf: int = 18) -> None:
    """Encode uint8 RGB ``[T, H, W, 3]`` as H.264 (yuv420p) in an MP4 container."""
    import av

    height, width = frames.shape[1:3]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        # x264's macroblock-tree rate control, with its assembly on, came out different from run to
        # run on 32 px frames (a few bytes of one keyframe, then every pixel after it), which broke
        # "same seed, same dataset"; without it, 30 encodes of one clip gave one file.
        stream.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "mbtree=0"}
        stream.codec_context.thread_count = 1  # tiny frames: threads only add overhead
        for rgb in frames:
            yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            for packet in stream.encode(yuv):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_motion_dataset(
    out_dir: str | Path,
    *,
    count: int,
    seed: int,
    spec: MotionSpec = MotionSpec(),
    on_clip: Callable[[int], None] | None = None,
) -> Path:
    """Write ``count`` clips (classes balanced, order shuffled) as ``<out_dir>/<label>/<label>_NNNNN.mp4``
    and a ``labels.csv`` of (path relative to ``out_dir``, label); returns the CSV's path.

    The same ``seed`` and ``spec`` give the same pixels; a held-out split uses another seed.
    ``on_clip(i)`` is called after each clip is written (for progress bars).
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    labels = [spec.classes[i % len(spec.classes)] for i in range(count)]
    rng.shuffle(labels)
    for name in spec.classes:
        (out / name).mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str]] = []
    for i, label in enumerate(labels):
        rel = f"{label}/{label}_{i:05d}.mp4"
        write_video(out / rel, render_clip(label, rng, size=spec.size, frames=spec.frames), fps=spec.fps)
        rows.append((rel, label))
        if on_clip is not None:
            on_clip(i)
    return write_labels_csv(out / LABELS_FILE, rows)


def write_labels_csv(path: Path, rows: Sequence[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("path", "label"))
        writer.writerows(rows)
    return path
