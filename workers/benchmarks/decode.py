"""``tsmindex bench decode``: exact and keyframe sampling vs a naive full decode, on generated clips
and on the corpus of real files (``tsmindex corpus fetch``).

Each sampled side is the whole ``sample_clips`` call (open, packet scan, seeks, decode, convert).
The naive side is what typical loaders do: decode every frame from the start and convert the chosen
ones (the exact plan's frames, chosen outside the timing). All sides run single-threaded in one
process, one after the other, and every run checks that each sampled frame is pixel-equal to the
frame of a full decode at the same index.
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

from workers.media import MediaLimits, SampledVideo, Sampling, sample_clips
from workers.media.decode import VideoReader, decode_sequential, make_converter
from workers.media.limits import Deadline
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
    BenchVideo("720p-gop60", "libx264", 1280, 720, 20.0, 60),
    BenchVideo("720p-gop300", "libx264", 1280, 720, 20.0, 300),
    BenchVideo("720p-gop250", "libx264", 1280, 720, 20.0, 250),
    BenchVideo("1080p-60s", "libx264", 1920, 1080, 60.0, 30),
    BenchVideo("1080p-60s-gop60", "libx264", 1920, 1080, 60.0, 60),
    BenchVideo("1080p-60s-gop300", "libx264", 1920, 1080, 60.0, 300),
    BenchVideo("720p-vp9", "libvpx-vp9", 1280, 720, 20.0, 60, crf=30),
    BenchVideo("720p-hevc", "libx265", 1280, 720, 20.0, 60),
)


@dataclass(frozen=True)
class DecodeBenchRow:
    """Median times of one file's sides; ``*_exact`` say each sampled frame equals the full decode's."""

    video: str
    codec: str
    size: str
    frames: int
    clips: int
    exact_ms: float
    keyframe_ms: float
    naive_ms: float
    exact_frames_decoded: int
    keyframe_frames_decoded: int
    naive_frames_decoded: int
    seeks: int
    keyframe_picks: int  # frames of the keyframe plan that are keyframes
    targets: int
    exact_frames_equal: bool
    keyframe_frames_equal: bool
    fallback: str | None = None
    # With --device cuda: exact sampling decoded by NVDEC and resized on the GPU, and how far its
    # frames are from the CPU's (mean |difference| in 0..255 levels; the interpolations differ).
    device: str = "cpu"
    device_exact_ms: float | None = None
    device_mean_abs_diff: float | None = None

    @property
    def exact_speedup(self) -> float:
        """Naive full decode time over exact sampling time."""
        return self.naive_ms / self.exact_ms

    @property
    def keyframe_speedup(self) -> float:
        """Naive full decode time over keyframe sampling time."""
        return self.naive_ms / self.keyframe_ms

    @property
    def keyframe_vs_exact(self) -> float:
        return self.exact_ms / self.keyframe_ms

    @property
    def exact_ms_per_clip(self) -> float:
        return self.exact_ms / self.clips


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


def full_decode(
    path: Path, targets: Sequence[int], *, resize: int, crop: int, rotation: int = 0
) -> tuple[dict[int, np.ndarray], int]:
    """The frames a plain full decode puts out at positions ``targets``, and how many it decoded.

    No packet scan: frames are numbered in output order, as a naive loader numbers them.
    """
    limits = MediaLimits()
    convert = make_converter(resize=resize, crop=crop, rotation=rotation)
    with VideoReader(path, limits=limits, deadline=Deadline(limits.decode_budget_s)) as reader:
        frames = decode_sequential(reader, None, targets, convert)
    return frames, reader.stats.frames_decoded


def frames_equal(result: SampledVideo, reference: dict[int, np.ndarray]) -> bool:
    """Every frame of every clip is pixel-equal to the reference frame at its index."""
    return all(
        index in reference and np.array_equal(frame, reference[index])
        for clip in result.clips
        for frame, index in zip(clip.frames, clip.frame_indices, strict=True)
    )


def _keyframe_picks(result: SampledVideo) -> int:
    """Sampled frames that are keyframes, when the keyframe plan was used."""
    if result.sampling != "keyframe":
        return 0
    keyframes = set(result.info.keyframes)
    return sum(i in keyframes for clip in result.clips for i in clip.frame_indices)


def _targets(result: SampledVideo) -> list[int]:
    return sorted({i for clip in result.clips for i in clip.frame_indices})


def measure(
    name: str,
    path: Path,
    *,
    repeats: int,
    num_segments: int = 8,
    window_s: float = 10.0,
    resize: int = 256,
    crop: int = 224,
    device: str = "cpu",
) -> DecodeBenchRow:
    """Median wall time of exact sampling, keyframe sampling and the naive decode on one file,
    interleaved per repeat, with the exactness checks; plus exact sampling on ``device`` if not
    the CPU."""
    times: dict[str, list[float]] = {"exact": [], "keyframe": [], "naive": [], "device": []}
    results: dict[Sampling, SampledVideo] = {}
    on_device: SampledVideo | None = None
    naive: dict[int, np.ndarray] = {}
    naive_decoded = 0
    for _ in range(repeats):
        for mode in ("exact", "keyframe"):
            started = time.perf_counter()
            results[mode] = sample_clips(
                path, num_segments=num_segments, window_s=window_s, resize=resize, crop=crop, sampling=mode
            )
            times[mode].append((time.perf_counter() - started) * 1000)
        if device != "cpu":
            started = time.perf_counter()
            on_device = sample_clips(
                path, num_segments=num_segments, window_s=window_s, resize=resize, crop=crop, device=device
            )
            times["device"].append((time.perf_counter() - started) * 1000)
        rotation = results["exact"].info.rotation
        started = time.perf_counter()
        naive, naive_decoded = full_decode(
            path, _targets(results["exact"]), resize=resize, crop=crop, rotation=rotation
        )
        times["naive"].append((time.perf_counter() - started) * 1000)
    exact, keyframe = results["exact"], results["keyframe"]
    # The keyframe plan's frames that the timed naive run did not convert: one more, untimed decode.
    extra = sorted(set(_targets(keyframe)) - set(naive))
    if extra:
        naive |= full_decode(path, extra, resize=resize, crop=crop, rotation=exact.info.rotation)[0]
    median = {side: round(statistics.median(values), 1) for side, values in times.items() if values}
    return DecodeBenchRow(
        video=name,
        codec=exact.info.codec,
        size=f"{exact.info.width}x{exact.info.height}",
        frames=exact.info.frame_count,
        clips=len(exact.clips),
        exact_ms=median["exact"],
        keyframe_ms=median["keyframe"],
        naive_ms=median["naive"],
        exact_frames_decoded=exact.frames_decoded,
        keyframe_frames_decoded=keyframe.frames_decoded,
        naive_frames_decoded=naive_decoded,
        seeks=exact.seeks,
        keyframe_picks=_keyframe_picks(keyframe),
        targets=sum(len(c.frame_indices) for c in exact.clips),
        exact_frames_equal=frames_equal(exact, naive),
        keyframe_frames_equal=frames_equal(keyframe, naive),
        fallback=exact.fallback,
        device=device,
        device_exact_ms=median.get("device"),
        device_mean_abs_diff=None if on_device is None else _mean_abs_diff(exact, on_device),
    )


def _mean_abs_diff(a: SampledVideo, b: SampledVideo) -> float:
    pairs = zip(a.clips, b.clips, strict=True)
    return round(float(np.mean([np.abs(x.frames.astype(np.int16) - y.frames).mean() for x, y in pairs])), 2)


def run(
    *,
    workdir: Path,
    videos: Sequence[BenchVideo] = BENCH_VIDEOS,
    corpus: Sequence[tuple[str, Path]] = (),
    repeats: int = 3,
    device: str = "cpu",
    on_step: Callable[[str], None] | None = None,
) -> list[DecodeBenchRow]:
    """Generate (or reuse) each video and measure it, then each corpus file (name, path);
    videos whose encoder is missing are skipped."""
    rows = []
    for spec in videos:
        if not encoder_available(spec.codec):
            continue
        if on_step:
            on_step(f"encoding {spec.name}")
        path = ensure_video(spec, workdir)
        if on_step:
            on_step(f"measuring {spec.name}")
        rows.append(measure(spec.name, path, repeats=repeats, device=device))
    for name, path in corpus:
        if on_step:
            on_step(f"measuring {name}")
        rows.append(measure(name, path, repeats=repeats, device=device))
    return rows


def to_json(rows: Sequence[DecodeBenchRow], *, repeats: int) -> dict[str, Any]:
    """The saved record: figures plus what they were measured on."""
    return {
        "benchmark": "decode",
        "repeats": repeats,
        "threads": 1,
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "rows": [
            {
                **asdict(row),
                "exact_speedup": round(row.exact_speedup, 2),
                "keyframe_speedup": round(row.keyframe_speedup, 2),
                "keyframe_vs_exact": round(row.keyframe_vs_exact, 2),
                "exact_ms_per_clip": round(row.exact_ms_per_clip, 1),
            }
            for row in rows
        ],
    }


def write_json(rows: Sequence[DecodeBenchRow], path: Path, *, repeats: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(rows, repeats=repeats), indent=2) + "\n")
