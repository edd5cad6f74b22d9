"""``tsmindex bench decode``: targeted decoding vs a naive full decode, on generated clips.

Ours is the whole ``sample_clips`` call (open, packet scan, seeks, decode, convert). The naive
side is what typical loaders do: decode every frame from the start and convert the chosen ones
(the same frames, chosen from the same plan outside the timing). Both run single-threaded in
one process, one after the other, and every run checks that both return identical pixels.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workers.media import MediaLimits, sample_clips
from workers.media.decode import decode_sequential, make_converter
from workers.media.limits import Deadline
from workers.media.probe import open_video
from workers.media.synth import encoder_available, make_video


@dataclass(frozen=True)
class BenchVideo:
    """A generated clip to measure on (cached by name under the work directory)."""

    name: str
    codec: str
    width: int
    height: int
    seconds: float
    gop: int
    fps: float = 30.0
    # Sensor-like grain coded at a phone-like quality (about 6 Mb/s at 720p): a clean panning
    # texture makes inter frames nearly free and keyframes 7x dearer, unlike camera footage.
    grain: int = 6
    crf: int = 18

    @property
    def filename(self) -> str:
        ext = "webm" if self.codec == "libvpx-vp9" else "mp4"
        return (
            f"{self.codec}-{self.width}x{self.height}-{self.seconds:g}s-{self.fps:g}fps"
            f"-gop{self.gop}-grain{self.grain}-crf{self.crf}.{ext}"
        )


BENCH_VIDEOS: tuple[BenchVideo, ...] = (
    BenchVideo("720p-gop30", "libx264", 1280, 720, 20.0, 30),
    BenchVideo("720p-gop250", "libx264", 1280, 720, 20.0, 250),
    BenchVideo("1080p-60s", "libx264", 1920, 1080, 60.0, 30),
    BenchVideo("720p-vp9", "libvpx-vp9", 1280, 720, 20.0, 60, crf=30),
    BenchVideo("720p-hevc", "libx265", 1280, 720, 20.0, 60),
)


@dataclass(frozen=True)
class DecodeBenchRow:
    video: str
    codec: str
    size: str
    seconds: float
    gop: int
    grain: int
    crf: int
    frames: int
    clips: int
    ours_ms: float
    naive_ms: float
    speedup: float
    ours_frames_decoded: int
    naive_frames_decoded: int
    seeks: int
    frames_exact: bool

    @property
    def ours_ms_per_clip(self) -> float:
        return self.ours_ms / self.clips


def ensure_video(spec: BenchVideo, workdir: Path) -> Path:
    """Generate ``spec`` under ``workdir`` unless it is already there."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / spec.filename
    if not path.exists():
        partial = path.with_name(f"partial-{path.name}")
        make_video(
            partial,
            frames=round(spec.seconds * spec.fps),
            fps=spec.fps,
            size=(spec.width, spec.height),
            codec=spec.codec,
            gop=spec.gop,
            grain=spec.grain,
            options={"crf": str(spec.crf)},
        )
        partial.rename(path)
    return path


def _naive(
    path: Path, targets: Sequence[int], *, resize: int, crop: int
) -> tuple[dict[int, np.ndarray], int]:
    limits = MediaLimits()
    deadline = Deadline(limits.decode_budget_s)
    convert = make_converter(resize=resize, crop=crop)
    with open_video(path, limits=limits, deadline=deadline) as (container, stream):
        # No scan: frames are numbered in output order, as a naive loader numbers them.
        frames, stats = decode_sequential(container, stream, None, targets, convert, deadline=deadline)
    return frames, stats.frames_decoded


def measure(
    spec: BenchVideo,
    path: Path,
    *,
    repeats: int,
    num_segments: int = 8,
    window_s: float = 10.0,
    resize: int = 256,
    crop: int = 224,
) -> DecodeBenchRow:
    """Median wall time of ours and of the naive decode on one file, with an exactness check."""
    ours_ms: list[float] = []
    naive_ms: list[float] = []
    exact = True
    for _ in range(repeats):
        started = time.perf_counter()
        result = sample_clips(path, num_segments=num_segments, window_s=window_s, resize=resize, crop=crop)
        ours_ms.append((time.perf_counter() - started) * 1000)
        targets = sorted({i for clip in result.clips for i in clip.frame_indices})
        started = time.perf_counter()
        naive, naive_decoded = _naive(path, targets, resize=resize, crop=crop)
        naive_ms.append((time.perf_counter() - started) * 1000)
        exact = exact and all(
            np.array_equal(frame, naive[index])
            for clip in result.clips
            for frame, index in zip(clip.frames, clip.frame_indices, strict=True)
        )
    ours, full = statistics.median(ours_ms), statistics.median(naive_ms)
    return DecodeBenchRow(
        video=spec.name,
        codec=spec.codec,
        size=f"{spec.width}x{spec.height}",
        seconds=spec.seconds,
        gop=spec.gop,
        grain=spec.grain,
        crf=spec.crf,
        frames=result.info.frame_count,
        clips=len(result.clips),
        ours_ms=round(ours, 1),
        naive_ms=round(full, 1),
        speedup=round(full / ours, 2),
        ours_frames_decoded=result.frames_decoded,
        naive_frames_decoded=naive_decoded,
        seeks=result.seeks,
        frames_exact=exact,
    )


def run(
    *,
    workdir: Path,
    videos: Sequence[BenchVideo] = BENCH_VIDEOS,
    repeats: int = 3,
    on_step: Callable[[str], None] | None = None,
) -> list[DecodeBenchRow]:
    """Generate (or reuse) each video and measure it; videos whose encoder is missing are skipped."""
    rows = []
    for spec in videos:
        if not encoder_available(spec.codec):
            continue
        if on_step:
            on_step(f"encoding {spec.name}")
        path = ensure_video(spec, workdir)
        if on_step:
            on_step(f"measuring {spec.name}")
        rows.append(measure(spec, path, repeats=repeats))
    return rows


def to_json(rows: Sequence[DecodeBenchRow], *, repeats: int) -> dict[str, Any]:
    """The saved record: figures plus what they were measured on."""
    return {
        "benchmark": "decode",
        "repeats": repeats,
        "threads": 1,
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "rows": [{**asdict(row), "ours_ms_per_clip": round(row.ours_ms_per_clip, 1)} for row in rows],
    }


def write_json(rows: Sequence[DecodeBenchRow], path: Path, *, repeats: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(rows, repeats=repeats), indent=2) + "\n")
