"""Labelled video datasets for training and evaluation, decoded with PyAV.

A dataset is given as a folder with one sub-folder of videos per class, or as a CSV (header
``path,label``) or JSONL (``{"path": ..., "label": ...}`` per line) file whose relative paths are
resolved against the file's folder. Frames are sampled the TSN way: training takes one random frame
from each of the T equal segments of the video, evaluation the frame at each segment's centre (the
same rule as ``workers.media.sample_clips``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from model_store.tsm import Preprocess
from workers.media.files import VIDEO_SUFFIXES

# TSN's multi-scale crop: crop sides as fractions of the (resized) shorter side.
TSN_SCALES: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)


class DatasetError(ValueError):
    """The dataset description is unusable (no videos, unknown label, malformed file)."""


@dataclass(frozen=True)
class VideoSample:
    path: Path
    label: int


@dataclass(frozen=True)
class LabelledVideos:
    samples: tuple[VideoSample, ...]
    classes: tuple[str, ...]


def load_samples(source: str | Path, *, classes: Sequence[str] | None = None) -> LabelledVideos:
    """Read a folder-per-class directory, a CSV or a JSONL file of (path, label).

    Class indices follow ``classes`` when given (labels outside it are an error), otherwise the
    sorted set of labels found.
    """
    src = Path(source)
    pairs: list[tuple[Path, str]]
    if src.is_dir():
        pairs = [
            (video, sub.name)
            for sub in sorted(p for p in src.iterdir() if p.is_dir())
            for video in sorted(sub.iterdir())
            if video.suffix.lower() in VIDEO_SUFFIXES
        ]
    elif src.suffix.lower() == ".csv":
        with src.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
                raise DatasetError(f"{src}: a CSV dataset needs a header with 'path' and 'label'")
            pairs = [(src.parent / row["path"], row["label"]) for row in reader]
    elif src.suffix.lower() in {".jsonl", ".ndjson"}:
        pairs = []
        for n, line in enumerate(src.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                pairs.append((src.parent / row["path"], str(row["label"])))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DatasetError(f"{src}:{n}: expected {{'path': ..., 'label': ...}}") from exc
    else:
        raise DatasetError(f"{src}: expected a folder per class, a .csv or a .jsonl file")
    if not pairs:
        raise DatasetError(f"{src}: no videos found")
    names = tuple(classes) if classes is not None else tuple(sorted({label for _, label in pairs}))
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({label for _, label in pairs} - index.keys())
    if unknown:
        raise DatasetError(f"{src}: labels not in the class list: {unknown[:10]}")
    return LabelledVideos(tuple(VideoSample(p, index[label]) for p, label in pairs), names)


def decode_clip(path: str | Path, *, resize: int, pick: Callable[[int], np.ndarray]) -> np.ndarray:
    """The frames ``pick(frame_count)`` selects from the first video stream, as uint8 RGB
    ``[len(picked), H, W, 3]`` in display orientation with the shorter side scaled to ``resize``.

    The scaling is the one swscale pass ``workers.media`` makes (bilinear, straight to RGB), so a
    centre crop of these frames has the pixels ``sample_clips`` gives at inference time. Only the
    picked frames are converted.
    """
    import av

    with av.open(str(path)) as container:
        decoded = list(container.decode(container.streams.video[0]))
    if not decoded:
        raise DatasetError(f"{path}: no decodable frames")
    out = []
    for i in pick(len(decoded)):
        frame = decoded[int(i)]
        scale = resize / min(frame.width, frame.height)
        rgb = frame.reformat(
            width=round(frame.width * scale),
            height=round(frame.height * scale),
            format="rgb24",
            interpolation="BILINEAR",
        ).to_ndarray()
        turns = _quarter_turns(frame)
        out.append(np.rot90(rgb, turns) if turns else rgb)
    return np.stack(out)


def _quarter_turns(frame: Any) -> int:
    """Counter-clockwise quarter turns the display matrix asks for (phone videos)."""
    try:
        return round(float(frame.rotation) / 90.0) % 4
    except (AttributeError, TypeError, ValueError):
        return 0


def segment_indices(n: int, num_segments: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """TSN sampling of ``num_segments`` frame indices out of ``n``: the centre of each equal segment,
    or, with ``rng``, one uniformly random frame inside each segment (training)."""
    bounds = np.arange(num_segments + 1) * n / num_segments
    if rng is None:
        return ((np.arange(num_segments) + 0.5) * n / num_segments).astype(np.int64)
    starts = np.floor(bounds[:-1]).astype(np.int64)
    ends = np.maximum(np.ceil(bounds[1:]).astype(np.int64), starts + 1)  # short videos repeat frames
    return np.minimum(rng.integers(starts, ends), n - 1)


def centre_crop(frames: np.ndarray, size: int) -> np.ndarray:
    height, width = frames.shape[1:3]
    top, left = (height - size) // 2, (width - size) // 2
    return frames[:, top : top + size, left : left + size]


def multi_scale_crop(
    frames: np.ndarray, size: int, scales: Sequence[float], rng: np.random.Generator
) -> np.ndarray:
    """TSN's multi-scale crop: a random crop whose sides are fractions (at most one scale step apart)
    of the shorter side, at a random position, resized to ``size`` x ``size``; one crop for all
    frames, so motion stays intact."""
    height, width = frames.shape[1:3]
    base = min(height, width)
    sides = [int(base * s) for s in scales]
    pairs = [(h, w) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= 1]
    crop_h, crop_w = pairs[int(rng.integers(len(pairs)))]
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    crops = frames[:, top : top + crop_h, left : left + crop_w]
    if crop_h == size and crop_w == size:
        return np.ascontiguousarray(crops)
    return np.stack(
        [np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BILINEAR)) for f in crops]
    )


class VideoClips(Dataset[tuple[torch.Tensor, int]]):
    """Clips of ``num_segments`` frames as uint8 ``[T, crop, crop, 3]`` tensors with their class index.

    Training mode samples a random frame per segment and applies the multi-scale crop (and, only if
    asked, a horizontal flip, which would swap left/right motion classes); evaluation mode takes
    segment centres, resizes the shorter side to ``preprocess.resize`` and centre-crops
    ``preprocess.crop``. Randomness derives from (seed, epoch, index), so runs repeat exactly and
    data-loader workers need no seeding.
    """

    def __init__(
        self,
        videos: LabelledVideos,
        *,
        num_segments: int,
        preprocess: Preprocess,
        train: bool,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        seed: int = 0,
    ) -> None:
        self.videos = videos
        self.num_segments = num_segments
        self.preprocess = preprocess
        self.train = train
        self.scales = tuple(scales)
        self.flip = flip
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.videos.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        sample = self.videos.samples[i]
        size, t = self.preprocess.resize, self.num_segments
        if self.train:
            rng = np.random.default_rng((self.seed, self.epoch, i))
            picked = decode_clip(sample.path, resize=size, pick=lambda n: segment_indices(n, t, rng))
            clip = multi_scale_crop(picked, self.preprocess.crop, self.scales, rng)
            if self.flip and rng.random() < 0.5:
                clip = np.ascontiguousarray(clip[:, :, ::-1])
        else:
            picked = decode_clip(sample.path, resize=size, pick=lambda n: segment_indices(n, t))
            clip = np.ascontiguousarray(centre_crop(picked, self.preprocess.crop))
        return torch.from_numpy(clip), sample.label


def normalise(batch: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """uint8 ``[N, T, H, W, 3]`` -> float ``[N, T, 3, H, W]`` scaled to 0..1 and standardised."""
    x = batch.permute(0, 1, 4, 2, 3).float().div_(255.0)
    mean = torch.tensor(preprocess.mean, device=x.device).view(1, 1, 3, 1, 1)
    std = torch.tensor(preprocess.std, device=x.device).view(1, 1, 3, 1, 1)
    return (x - mean) / std
