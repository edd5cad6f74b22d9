"""Top-1 / top-5 accuracy and a confusion matrix for a trained network on a labelled dataset."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from model_store.tsm import TSM, ModelCard
from workers.training.datasets import LabelledVideos, VideoClips, normalise


@dataclass(frozen=True)
class EvalResult:
    classes: tuple[str, ...]
    confusion: np.ndarray  # [K, K] int: rows are true classes, columns predictions
    top1: float
    top5: float  # top-min(5, K)

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    @property
    def per_class(self) -> dict[str, float]:
        totals = self.confusion.sum(axis=1)
        return {
            name: float(self.confusion[i, i] / totals[i]) if totals[i] else float("nan")
            for i, name in enumerate(self.classes)
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "top1": self.top1,
            "top5": self.top5,
            "per_class_top1": self.per_class,
            "classes": list(self.classes),
            "confusion": self.confusion.tolist(),
        }


def accumulate(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int, classes: tuple[str, ...]
) -> EvalResult:
    """Fold (logits [N, K], labels [N]) batches into an :class:`EvalResult`."""
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    top1 = top5 = total = 0
    k = min(5, num_classes)
    for logits, labels in batches:
        ranked = logits.float().topk(k, dim=1).indices.cpu()
        labels = labels.cpu()
        top1 += int((ranked[:, 0] == labels).sum())
        top5 += int((ranked == labels[:, None]).any(dim=1).sum())
        total += len(labels)
        np.add.at(confusion, (labels.numpy(), ranked[:, 0].numpy()), 1)
    if total == 0:
        raise ValueError("nothing to evaluate")
    return EvalResult(classes, confusion, top1 / total, top5 / total)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    videos: LabelledVideos,
    *,
    card: ModelCard,
    device: torch.device,
    batch_size: int = 16,
    bf16: bool = False,
    channels_last: bool = True,
    workers: int = 0,
    show_progress: bool = True,
) -> EvalResult:
    """Test-time TSN sampling (segment centres, resize + centre crop as the card says)."""
    from rich.progress import track

    if videos.classes != card.classes:
        raise ValueError("the dataset's class list differs from the model's")
    dataset = VideoClips(
        videos, num_segments=card.config.num_segments, preprocess=card.preprocess, train=False
    )
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    was_training = model.training
    model.eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)

    def batches() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        for clips, labels in track(loader, description="evaluating", disable=not show_progress):
            x = normalise(clips.to(device), card.preprocess)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                yield model(x), labels

    try:
        return accumulate(batches(), card.config.num_classes, card.classes)
    finally:
        model.train(was_training)


@torch.inference_mode()
def evaluate_media(
    model: TSM,
    videos: LabelledVideos,
    *,
    card: ModelCard,
    device: torch.device,
    batch_size: int = 16,
    bf16: bool = False,
    show_progress: bool = True,
) -> EvalResult:
    """Like :func:`evaluate`, but frames come from ``workers.media.sample_clips`` (the indexing
    path's decoder); each video's first window is its clip."""
    from rich.progress import track

    from workers.media import sample_clips

    if videos.classes != card.classes:
        raise ValueError("the dataset's class list differs from the model's")
    model.eval()
    t, pre = card.config.num_segments, card.preprocess

    def batches() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        samples = videos.samples
        for start in track(
            range(0, len(samples), batch_size), description="evaluating", disable=not show_progress
        ):
            chunk = samples[start : start + batch_size]
            clips = [
                sample_clips(s.path, num_segments=t, resize=pre.resize, crop=pre.crop).clips[0].frames
                for s in chunk
            ]
            x = normalise(torch.from_numpy(np.stack(clips)).to(device), pre)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                yield model(x), torch.tensor([s.label for s in chunk])

    return accumulate(batches(), card.config.num_classes, card.classes)


def plot_confusion(result: EvalResult, path: str | Path, *, title: str = "") -> Path:
    """Row-normalised confusion matrix as a PNG (counts written in the cells)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    k = len(result.classes)
    totals = result.confusion.sum(axis=1, keepdims=True)
    rates = np.divide(result.confusion, totals, out=np.zeros(result.confusion.shape), where=totals > 0)
    side = max(4.0, 0.5 * k + 2)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(k), result.classes, rotation=45, ha="right")
    ax.set_yticks(range(k), result.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"top-1 {result.top1:.1%} on {result.count} clips")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                colour = "white" if rates[i, j] > 0.5 else "black"
                ax.text(j, i, str(result.confusion[i, j]), ha="center", va="center", color=colour, fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def save_result(result: EvalResult, path: str | Path, **meta: Any) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**meta, **result.to_dict()}, indent=2) + "\n")
    return out
