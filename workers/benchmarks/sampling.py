"""``tsmindex bench sampling``: do keyframe-sampled clips get the labels exact ones get?

Both modes sample the same windows of the same files; the shipped motion model (MobileNetV2-TSM,
32 px, in process) labels every clip. Footage: phone-like videos in which each 10 s window holds one
motion-set object moving left, right, up or down over a static scene (so each window also has a true
label), with sensor grain, at 360p, 720p and 1080p with 1 s, 2 s and 10 s GOPs; and the real corpus.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from workers.media import SAMPLING_MODES, SampledVideo, sample_clips
from workers.training.motion import DIRECTION_CLASSES, render_clip

WINDOW_S = 10.0
# Drawn at this size, then scaled up to a square of the frame's height in the middle of the frame:
# the model sees "shorter side to 32, centre crop 32", i.e. the square.
DRAW_SIZE = 128


@dataclass(frozen=True)
class FootageSpec:
    """Generated phone-like footage: ``videos`` files of ``seconds`` each."""

    name: str
    width: int
    height: int
    gop: int
    videos: int
    seconds: float = 60.0
    fps: int = 30
    grain: int = 6
    crf: int = 20

    def filename(self, seed: int) -> str:
        return f"motion-{self.width}x{self.height}-{self.seconds:g}s-gop{self.gop}-seed{seed}.mp4"


# Labels are taken at 32 px whatever the resolution; 360p adds windows at a fraction of the cost.
FOOTAGE: tuple[FootageSpec, ...] = (
    FootageSpec("720p-gop30", 1280, 720, 30, videos=1),
    FootageSpec("360p-gop30", 640, 360, 30, videos=2),
    FootageSpec("360p-gop60", 640, 360, 60, videos=2),
    FootageSpec("360p-gop300", 640, 360, 300, videos=2),
    FootageSpec("720p-gop60", 1280, 720, 60, videos=1),
    FootageSpec("720p-gop300", 1280, 720, 300, videos=1),
    FootageSpec("1080p-gop30", 1920, 1080, 30, videos=1),
    FootageSpec("1080p-gop60", 1920, 1080, 60, videos=1),
    FootageSpec("1080p-gop300", 1920, 1080, 300, videos=1),
)


def window_labels(spec: FootageSpec, seed: int) -> list[str]:
    """The true motion of each window of a generated video."""
    rng = np.random.default_rng(seed)
    count = round(spec.seconds / WINDOW_S)
    return [DIRECTION_CLASSES[int(i)] for i in rng.integers(0, len(DIRECTION_CLASSES), size=count)]


def make_footage(spec: FootageSpec, path: Path, *, seed: int) -> list[str]:
    """Write one video of ``spec`` and return its windows' true labels."""
    labels = window_labels(spec, seed)
    rng = np.random.default_rng(seed + 1)
    per_window = round(WINDOW_S * spec.fps)
    side = spec.height
    left = (spec.width - side) // 2
    shape = (spec.height, spec.width, 3)
    grains = [rng.integers(0, 2 * spec.grain + 1, size=shape, dtype=np.uint8) for _ in range(5)]
    partial = path.with_name(f"partial-{path.name}")
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(spec.fps))
        if not isinstance(stream, av.VideoStream):
            raise TypeError("libx264 is not a video encoder here")
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        stream.options = {
            "crf": str(spec.crf),
            "preset": "veryfast",
            "x264-params": f"keyint={spec.gop}:min-keyint={spec.gop}:scenecut=0",
        }
        canvas = np.full((spec.height, spec.width, 3), 96, dtype=np.uint8)
        for w, label in enumerate(labels):
            clip = render_clip(label, rng, size=DRAW_SIZE, frames=per_window)  # [T, 128, 128, 3]
            for t, small in enumerate(clip):
                big = av.VideoFrame.from_ndarray(small, format="rgb24").reformat(width=side, height=side)
                canvas[:, left : left + side] = big.to_ndarray()
                image = np.minimum(canvas, 255 - 2 * spec.grain) + grains[t % len(grains)]
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = w * per_window + t
                frame.time_base = Fraction(1, spec.fps)
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    partial.rename(path)
    return labels


@dataclass(frozen=True)
class AgreementRow:
    """How often keyframe sampling gave exact sampling's labels, over ``windows`` windows."""

    footage: str
    files: int
    windows: int
    keyframe_picks: float  # share of sampled frames that are keyframes
    top1_agreement: float
    top5_agreement: float  # same set of top-min(5, classes) labels
    ranking_agreement: float  # same order of every class
    exact_accuracy: float | None  # against the true labels, generated footage only
    keyframe_accuracy: float | None
    mean_abs_score_change: float  # of exact's top-1 label


Classify = Callable[[list[np.ndarray]], list[list[tuple[str, float]]]]


def labels_of(classify: Classify, result: SampledVideo) -> list[list[tuple[str, float]]]:
    """Every class with its probability, best first, for each clip."""
    return classify([clip.frames for clip in result.clips])


def agreement(
    footage: str,
    files: Sequence[tuple[Path, list[str] | None]],  # each with its windows' true labels, if known
    classify: Classify,
    *,
    resize: int,
    crop: int,
    top: int = 5,
) -> AgreementRow:
    """Sample each file both ways (default 10 s windows) and compare the labels window by window."""
    same1 = same5 = same_rank = picks = frames = 0
    right = {"exact": 0, "keyframe": 0}
    truths = 0
    score_change: list[float] = []
    windows = 0
    for path, truth in files:
        runs = {
            mode: sample_clips(path, window_s=WINDOW_S, resize=resize, crop=crop, sampling=mode)
            for mode in SAMPLING_MODES
        }
        exact, keyframe = labels_of(classify, runs["exact"]), labels_of(classify, runs["keyframe"])
        keyframes = set(runs["keyframe"].info.keyframes) if runs["keyframe"].sampling == "keyframe" else set()
        for clip in runs["keyframe"].clips:
            picks += sum(i in keyframes for i in clip.frame_indices)
            frames += len(clip.frame_indices)
        for w, (a, b) in enumerate(zip(exact, keyframe, strict=True)):
            windows += 1
            same1 += a[0][0] == b[0][0]
            k = min(top, len(a))
            same5 += {name for name, _ in a[:k]} == {name for name, _ in b[:k]}
            same_rank += [name for name, _ in a] == [name for name, _ in b]
            score_change.append(abs(a[0][1] - dict(b)[a[0][0]]))
            if truth is not None:
                truths += 1
                right["exact"] += a[0][0] == truth[w]
                right["keyframe"] += b[0][0] == truth[w]
    return AgreementRow(
        footage=footage,
        files=len(files),
        windows=windows,
        keyframe_picks=round(picks / max(frames, 1), 4),
        top1_agreement=round(same1 / windows, 4),
        top5_agreement=round(same5 / windows, 4),
        ranking_agreement=round(same_rank / windows, 4),
        exact_accuracy=round(right["exact"] / truths, 4) if truths else None,
        keyframe_accuracy=round(right["keyframe"] / truths, 4) if truths else None,
        mean_abs_score_change=round(statistics.fmean(score_change), 4),
    )


Labelled = list[tuple[Path, list[str] | None]]


def generated_files(spec: FootageSpec, workdir: Path, *, on_step: Callable[[str], None]) -> Labelled:
    """The videos of ``spec`` under ``workdir`` (made when missing) with their true labels."""
    workdir.mkdir(parents=True, exist_ok=True)
    files: Labelled = []
    for seed in range(spec.videos):
        path = workdir / spec.filename(seed)
        if not path.exists():
            on_step(f"encoding {path.name}")
            make_footage(spec, path, seed=seed)
        files.append((path, window_labels(spec, seed)))
    return files


def to_json(rows: Sequence[AgreementRow], *, model: str) -> dict[str, Any]:
    return {"benchmark": "sampling", "model": model, "window_s": WINDOW_S, "rows": [asdict(r) for r in rows]}
