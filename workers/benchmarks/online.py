"""``tsmindex bench online``: the online TSM on motion whose direction changes, frame by frame.

Each generated shot (``render_path``) moves one object along straight legs, each in a new direction.
Every model runs through the ``tsmindex watch`` code (decode, ``OnlineClassifier``, moments), and is
scored against the truth and against the offline bi-directional model that indexes the archive,
applied to the same last ``T`` frames:

- clean accuracy: frames whose last ``T`` frames all belong to one leg;
- agreement: frames where the online label equals the offline one (all frames with ``T`` behind them,
  and the clean ones alone: around a change the two turn at different frames);
- lag: frames from a change of direction until the label turns right and stays right to the next
  change (``None`` when it never does);
- latency: time per frame of preprocessing and one online step.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_store.tsm import TSM, ModelCard, load_model
from workers.training.datasets import normalise
from workers.training.motion import MotionPath, render_path, write_video
from workers.watch.moments import MomentTracker
from workers.watch.online import FrameLabel, OnlineClassifier
from workers.watch.runner import run_watch
from workers.watch.source import SourceFrame, read_frames


@dataclass(frozen=True)
class OnlineBenchConfig:
    out_dir: str
    models: tuple[str, ...]  # checkpoint paths, resolved by the caller
    reference: str  # the offline model the archive is indexed with
    paths: int = 4
    legs: int = 12
    seed: int = 7
    size: int = 32
    fps: int = 8


@dataclass(frozen=True)
class ShotScore:
    labels: list[str]
    clean_accuracy: float
    agreement: float
    clean_agreement: float
    lags: list[int | None]


def write_shots(cfg: OnlineBenchConfig) -> list[tuple[Path, MotionPath]]:
    """The generated shots as H.264 files (the same each run for the same seed)."""
    out = Path(cfg.out_dir) / "shots"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    shots = []
    for i in range(cfg.paths):
        path = render_path(rng, size=cfg.size, legs=cfg.legs)
        video = out / f"path-{i:02d}.mp4"
        write_video(video, path.frames, fps=cfg.fps)
        shots.append((video, path))
    return shots


def decode(video: Path, card: ModelCard) -> list[SourceFrame]:
    return list(read_frames(str(video), resize=card.preprocess.resize, crop=card.preprocess.crop, speed=0))


def online_run(
    model: TSM, card: ModelCard, frames: Sequence[SourceFrame]
) -> tuple[list[str], list[float], list[float]]:
    """Labels, per-frame wall latencies and CPU times, exactly as ``tsmindex watch`` computes them."""
    results: list[FrameLabel] = []
    run_watch(
        frames,
        OnlineClassifier(model, card),
        MomentTracker(),
        on_frame=lambda _f, result, _s: results.append(result),
    )
    return [r.label for r in results], [r.latency_s for r in results], [r.cpu_s for r in results]


@torch.inference_mode()
def offline_labels(model: TSM, card: ModelCard, frames: Sequence[SourceFrame]) -> list[str | None]:
    """The offline network on the last ``T`` frames at every frame (None before ``T`` frames)."""
    t = card.config.num_segments
    rgb = torch.from_numpy(np.stack([f.rgb for f in frames]))  # [N, H, W, 3]
    windows = rgb.unfold(0, t, 1).permute(0, 4, 1, 2, 3)  # [N - T + 1, T, H, W, 3]
    out: list[str | None] = [None] * (t - 1)
    for start in range(0, windows.shape[0], 64):
        logits = model.eval()(normalise(windows[start : start + 64].contiguous(), card.preprocess))
        out += [card.classes[int(i)] for i in logits.argmax(1)]
    return out


def settle_lags(
    labels: Sequence[str | None], truth: Sequence[str], changes: Sequence[int]
) -> list[int | None]:
    """Per change of direction (the first leg's start excluded): frames until the label is right and
    stays right up to the next change."""
    lags: list[int | None] = []
    for c, end in itertools.pairwise([*changes[1:], len(truth)]):
        lag = None
        for f in range(c, end):
            if all(labels[g] == truth[g] for g in range(f, end)):
                lag = f - c
                break
        lags.append(lag)
    return lags


def score_shot(
    labels: Sequence[str | None], offline: Sequence[str | None], path: MotionPath, t: int
) -> ShotScore:
    starts = np.searchsorted(np.array(path.changes), np.arange(len(path.labels)), side="right") - 1
    clean = [f for f in range(len(path.labels)) if starts[f] >= 0 and f - path.changes[starts[f]] >= t - 1]
    with_window = range(t - 1, len(path.labels))
    return ShotScore(
        labels=[str(x) for x in labels],
        clean_accuracy=statistics.fmean(labels[f] == path.labels[f] for f in clean),
        agreement=statistics.fmean(labels[f] == offline[f] for f in with_window),
        clean_agreement=statistics.fmean(labels[f] == offline[f] for f in clean),
        lags=settle_lags(labels, path.labels, path.changes),
    )


def _ms_quantiles(seconds: Sequence[float]) -> dict[str, float] | None:
    if not seconds:
        return None
    ordered = sorted(seconds)

    def q(p: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return {"p50": q(0.5), "p95": q(0.95), "mean": 1000 * statistics.fmean(ordered)}


def summarise(
    scores: Sequence[ShotScore], latencies_s: Sequence[float] = (), cpu_s: Sequence[float] = ()
) -> dict[str, Any]:
    lags = [lag for s in scores for lag in s.lags]
    settled = sorted(lag for lag in lags if lag is not None)
    return {
        "clean_accuracy": statistics.fmean(s.clean_accuracy for s in scores),
        "agreement_with_offline": statistics.fmean(s.agreement for s in scores),
        "clean_agreement_with_offline": statistics.fmean(s.clean_agreement for s in scores),
        "changes": len(lags),
        "never_settled": len(lags) - len(settled),
        "lag_median_frames": statistics.median(settled) if settled else None,
        "lag_max_frames": settled[-1] if settled else None,
        "lags": lags,
        "latency_ms": _ms_quantiles(latencies_s),
        "cpu_ms": _ms_quantiles(cpu_s),
    }


def run_online_bench(cfg: OnlineBenchConfig) -> dict[str, Any]:
    """Score every model of ``cfg`` and the offline reference; saves ``online.json``."""
    shots = write_shots(cfg)
    reference, ref_card = load_model(cfg.reference)
    decoded = [decode(video, ref_card) for video, _ in shots]
    offline = [offline_labels(reference, ref_card, frames) for frames in decoded]
    t = ref_card.config.num_segments
    report: dict[str, Any] = {
        "config": asdict(cfg),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_start": os.getloadavg(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "offline_reference": {
            "model": f"{ref_card.name}:{ref_card.version}",
            **summarise([score_shot(o, o, p, t) for o, (_, p) in zip(offline, shots, strict=True)]),
        },
        "models": [],
    }
    for checkpoint in cfg.models:
        model, card = load_model(checkpoint)
        scores, latencies, cpu = [], [], []
        for (video, path), ref in zip(shots, offline, strict=True):
            labels, lat, used = online_run(model, card, decode(video, card))
            scores.append(score_shot(labels, ref, path, t))
            latencies += lat
            cpu += used
        report["models"].append(
            {
                "model": f"{card.name}:{card.version}",
                "checkpoint": str(checkpoint),
                "shift": "uni" if card.config.causal else "bi",
                **summarise(scores, latencies, cpu),
            }
        )
    report["machine"]["load_average_end"] = os.getloadavg()
    out = Path(cfg.out_dir) / "online.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report
